import { Platform } from "./gen/presence/v1/client_pb.js";

/** Platform names as in the protocol (`"WEB"`, `"IOS"`, ...). */
export type PlatformName = Exclude<keyof typeof Platform, number>;

/** "online" | "push_online" | "offline" (a string for forward compatibility). */
export type PresenceStatus = "online" | "push_online" | "offline" | (string & {});

/** A user's status as the client exposes it. */
export interface UserStatus {
  userId: string;
  status: PresenceStatus;
  /** Platforms with an online device, sorted, by name ("IOS", "WEB", ...). */
  platforms: PlatformName[];
  /** "" when none. */
  customStatus: string;
  /** The user's event counter: only grows; 0 for a never-seen user. Exact (bigint). */
  userVersion: bigint;
  /** When the status last changed, unix milliseconds (0 if unknown). */
  changedAtMs: number;
}

export type ConnectionState = "idle" | "connecting" | "online" | "reconnecting" | "closed";

export interface KickedDeviceInfo {
  platform: PlatformName;
  deviceId: string;
}

/** Payload of the `loginOk` event. */
export interface LoginOkInfo {
  sessionId: string;
  heartbeatIntervalS: number;
  heartbeatTimeoutS: number;
  /** Devices of this user that this login forced offline. */
  kickedDevices: KickedDeviceInfo[];
}

/** Payload of the `kicked` event. */
export interface KickedInfo {
  reason: string;
  byPlatform: PlatformName;
  byDeviceId: string;
  /** True when the client stopped (reason "replaced_by_login" or "admin"); false when it reconnects. */
  final: boolean;
}

export function platformName(p: Platform): PlatformName {
  const name = Platform[p] as PlatformName | undefined;
  return name ?? "PLATFORM_UNSPECIFIED";
}

export function toPlatform(p: Platform | PlatformName): Platform {
  if (typeof p === "number") return p;
  const v = Platform[p];
  if (v === undefined) throw new RangeError(`unknown platform ${String(p)}`);
  return v;
}
