export { PresenceClient, CLIENT_VERSION, MAX_CUSTOM_STATUS_BYTES } from "./client.js";
export type { PresenceClientOptions, PresenceEvents, RetryInfo } from "./client.js";
export { PresenceError, ClientErrorCode, FINAL_LOGIN_CODES, FINAL_KICK_REASONS, isFinalLoginCode, isFinalKickReason } from "./errors.js";
export type { PresenceErrorKind } from "./errors.js";
export { backoffDelay, backoffCap, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { isNewer, StatusStore } from "./versions.js";
export { chunk, chunkIds, uniq, MAX_IDS_PER_REQUEST } from "./chunk.js";
export { encodeClientFrame, decodeServerFrame, toUserStatus, MAX_FRAME_LEN } from "./codec.js";
export { RequestTracker } from "./requests.js";
export { defaultWebSocketFactory } from "./transport.js";
export type { WebSocketLike, WebSocketFactory } from "./transport.js";
export { TypedEmitter } from "./emitter.js";
export { Platform } from "./gen/presence/v1/client_pb.js";
export { platformName, toPlatform } from "./types.js";
export type {
  ConnectionState,
  KickedDeviceInfo,
  KickedInfo,
  LoginOkInfo,
  PlatformName,
  PresenceStatus,
  UserStatus,
} from "./types.js";
