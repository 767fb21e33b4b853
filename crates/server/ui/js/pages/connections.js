export function render(root) { root.textContent = 'Connections: not built yet.'; } // placeholder: pages17 builds this page
