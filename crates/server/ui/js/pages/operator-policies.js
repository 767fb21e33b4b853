// Operator policies (`#/operator-policies`, administrators only): the policies page's
// list and form (policies.js) on /api/operator-policies.

import { policyPage } from './policies.js';

/** Draws the operator policies page. */
export function render(root) {
  return policyPage(root, 'operator-policies', 'Operator policies');
}
