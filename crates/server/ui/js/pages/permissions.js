export function render(root) { root.textContent = 'Permissions: not built yet.'; } // placeholder: pages17 builds this page
