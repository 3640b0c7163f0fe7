/**
 * Operations: the permissions a configuration needs.
 *
 * @module
 */
export {
  checkPermissions,
  permissionFlags,
  type PermissionNeeds,
  type PermissionReport,
} from "./permissions.ts";
