import { test } from "node:test";
import assert from "node:assert/strict";
import { TypedEmitter } from "../src/emitter.js";

class E extends TypedEmitter<{ a: [n: number]; b: [s: string, t: string] }> {
  fire<K extends "a" | "b">(k: K, ...args: K extends "a" ? [number] : [string, string]) {
    (this.emit as (k: string, ...a: unknown[]) => void)(k, ...args);
  }
}

test("on / off / once", () => {
  const e = new E();
  const got: unknown[] = [];
  const off = e.on("a", (n) => got.push(n));
  e.once("b", (s, t) => got.push(s + t));
  e.fire("a", 1);
  e.fire("b", "x", "y");
  e.fire("b", "z", "z");
  off();
  e.fire("a", 2);
  assert.deepEqual(got, [1, "xy"]);
  assert.equal(e.listenerCount("a"), 0);
  assert.equal(e.listenerCount("b"), 0);
});

test("a throwing listener does not stop the others and is reported", () => {
  const e = new E();
  const got: number[] = [];
  const reported: unknown[] = [];
  e.onListenerError = (err) => reported.push(err);
  e.on("a", () => {
    throw new Error("boom");
  });
  e.on("a", (n) => got.push(n));
  e.fire("a", 7);
  assert.deepEqual(got, [7]);
  assert.equal(reported.length, 1);
  assert.match(String(reported[0]), /boom/);
});
