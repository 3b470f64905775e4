import type { UserStatus } from "./types.js";

/**
 * The user_version rule: an incoming status replaces the held one only when its user_version is
 * strictly above it. With nothing held, anything is accepted (a never-seen user has version 0).
 */
export function isNewer(held: bigint | undefined, incoming: bigint): boolean {
  return held === undefined || incoming > held;
}

/** Last known status of each user, updated only through the user_version rule. */
export class StatusStore {
  private readonly byUser = new Map<string, UserStatus>();

  /** Applies `status`; returns true when it was accepted (newer than what is held). */
  apply(status: UserStatus): boolean {
    const held = this.byUser.get(status.userId);
    if (!isNewer(held?.userVersion, status.userVersion)) return false;
    this.byUser.set(status.userId, status);
    return true;
  }

  get(userId: string): UserStatus | undefined {
    return this.byUser.get(userId);
  }

  delete(userId: string): void {
    this.byUser.delete(userId);
  }

  clear(): void {
    this.byUser.clear();
  }

  get size(): number {
    return this.byUser.size;
  }
}
