/**
 * The config text the config tests start from: small, valid, with the line of each
 * key noted, so that a test can expect an error on a given line.
 *
 * @module
 */

/** The config file name the tests give to `parseConfig`. */
export const PATH = "/etc/mtlb/lb.toml";

/** A small valid config; bad-config cases edit it. Line numbers are noted per line. */
export const BASE = [
  "[server]", //                                   1
  'listen = "127.0.0.1:8443"', //                  2
  "", //                                           3
  "[tls]", //                                      4
  'ca = "certs/ca.crt"', //                        5
  'cert = "certs/server.crt"', //                  6
  'key = "certs/server.key"', //                   7
  "", //                                           8
  "[groups.echo]", //                              9
  'upstreams = ["127.0.0.1:7001"]', //             10
  "", //                                           11
  "[clients.alice]", //                            12
  'match = { cn = "alice" }', //                   13
  'groups = ["echo"]', //                          14
  "", //                                           15 (appended text starts here)
].join("\n");
