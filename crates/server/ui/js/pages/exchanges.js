export function render(root) { root.textContent = 'Exchanges: not built yet.'; } // placeholder: pages17 builds this page
