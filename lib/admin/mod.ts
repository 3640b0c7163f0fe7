/**
 * The admin HTTP endpoint: metrics, status, denials, health, reload, and the dashboard.
 *
 * @module
 */
export {
  AdminServer,
  type AdminServerOptions,
  type AdminTarget,
  RECENT_DENIALS,
  type RecentDenial,
} from "./admin_server.ts";
