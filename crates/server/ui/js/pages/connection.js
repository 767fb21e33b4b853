export function render(root) { root.textContent = 'Connection: not built yet.'; } // placeholder: pages17 builds this page
