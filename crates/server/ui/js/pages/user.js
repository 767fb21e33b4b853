export function render(root) { root.textContent = 'User: not built yet.'; } // placeholder: pages17 builds this page
