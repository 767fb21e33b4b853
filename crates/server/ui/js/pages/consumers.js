export function render(root) { root.textContent = 'Consumers: not built yet.'; } // placeholder: pages17 builds this page
