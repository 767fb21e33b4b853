export function render(root) { root.textContent = 'Limits: not built yet.'; } // placeholder: pages17 builds this page
