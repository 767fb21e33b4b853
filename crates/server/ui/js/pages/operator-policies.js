export function render(root) { root.textContent = 'Operator policies: not built yet.'; } // placeholder: pages17 builds this page
