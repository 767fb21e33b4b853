export function render(root) { root.textContent = 'Exchange: not built yet.'; } // placeholder: pages17 builds this page
