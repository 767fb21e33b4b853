export function render(root) { root.textContent = 'Definitions: not built yet.'; } // placeholder: pages17 builds this page
