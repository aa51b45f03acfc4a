// The device stores and their keys (no server).

import assert from "node:assert/strict";
import { test } from "node:test";

import { deviceKey, localStorageDeviceStore, memoryDeviceStore } from "../dist/index.js";

test("deviceKey: per base URL, username folded as latchkey compares it", () => {
  assert.equal(deviceKey("https://auth.example/", "Alice"), deviceKey("https://auth.example", "alice"));
  assert.equal(deviceKey("https://auth.example", "ａlice"), deviceKey("https://auth.example", "alice"), "full width");
  assert.notEqual(deviceKey("https://auth.example", "alice"), deviceKey("https://other.example", "alice"));
  assert.notEqual(deviceKey("https://auth.example", "alice"), deviceKey("https://auth.example", "bob"));
});

test("memoryDeviceStore", async () => {
  const store = memoryDeviceStore();
  assert.equal(await store.get("k"), undefined);
  await store.set("k", "lk_d_one");
  assert.equal(await store.get("k"), "lk_d_one");
  assert.equal(await memoryDeviceStore().get("k"), undefined, "stores are separate");
});

test("localStorageDeviceStore on a Storage", async () => {
  const items = new Map();
  const storage = {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => items.set(k, String(v)),
  };
  const store = localStorageDeviceStore(storage);
  assert.equal(await store.get("k"), null);
  await store.set("k", "lk_d_two");
  assert.equal(items.get("k"), "lk_d_two");
  assert.equal(await localStorageDeviceStore(storage).get("k"), "lk_d_two", "survives the store object");
  assert.throws(() => localStorageDeviceStore(undefined), TypeError, "no localStorage in Node");
});
