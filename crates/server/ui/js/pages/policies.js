export function render(root) { root.textContent = 'Policies: not built yet.'; } // placeholder: pages17 builds this page
