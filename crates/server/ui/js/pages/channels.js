export function render(root) { root.textContent = 'Channels: not built yet.'; } // placeholder: pages17 builds this page
