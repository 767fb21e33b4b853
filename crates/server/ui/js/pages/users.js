export function render(root) { root.textContent = 'Users: not built yet.'; } // placeholder: pages17 builds this page
