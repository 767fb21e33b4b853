export function render(root) { root.textContent = 'Virtual host: not built yet.'; } // placeholder: pages17 builds this page
