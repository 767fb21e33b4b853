export function render(root) { root.textContent = 'Virtual hosts: not built yet.'; } // placeholder: pages17 builds this page
