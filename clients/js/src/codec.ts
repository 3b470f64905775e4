import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ClientFrameSchema,
  ServerFrameSchema,
  type ServerFrame,
  type UserStatus as UserStatusPb,
} from "./gen/presence/v1/client_pb.js";
import { platformName, type UserStatus } from "./types.js";

/** Largest frame body the protocol allows (bytes); a larger one makes the gateway close the link. */
export const MAX_FRAME_LEN = 65_536;

export type ClientFrameInit = MessageInitShape<typeof ClientFrameSchema>;

/** One ClientFrame as the bytes of one binary WebSocket message (no length prefix). */
export function encodeClientFrame(init: ClientFrameInit): Uint8Array {
  return toBinary(ClientFrameSchema, create(ClientFrameSchema, init));
}

/** One binary WebSocket message as a ServerFrame; throws on undecodable bytes. */
export function decodeServerFrame(bytes: Uint8Array): ServerFrame {
  return fromBinary(ServerFrameSchema, bytes);
}

/** The client's view of a protocol UserStatus. */
export function toUserStatus(pb: UserStatusPb): UserStatus {
  return {
    userId: pb.userId,
    status: pb.status,
    platforms: pb.platforms.map(platformName),
    customStatus: pb.customStatus,
    userVersion: pb.userVersion,
    changedAtMs: Number(pb.changedAtMs),
  };
}

/** Bytes of the varint encoding of `n` (n >= 0). */
export function varintLen(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

const utf8 = new TextEncoder();

/** Bytes that `id` adds to a `repeated string user_ids` field: tag, length, UTF-8 bytes. */
export function encodedIdLen(id: string): number {
  const n = utf8.encode(id).length;
  return 1 + varintLen(n) + n;
}

/**
 * Bytes left for the user ids of one Subscribe/Unsubscribe: the frame limit less the ClientFrame
 * field header (tag + up to 3 length bytes), the request_id (tag + up to 5 bytes), and slack.
 */
export const MAX_ID_BYTES_PER_REQUEST = MAX_FRAME_LEN - 16;
