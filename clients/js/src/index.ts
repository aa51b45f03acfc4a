export {
  createClient,
  LatchkeyClient,
  type Account,
  type Aal,
  type Api,
  type ClientOptions,
  type DeviceItem,
  type Enrollment,
  type FactorKind,
  type JwtAnswer,
  type LoginOptions,
  type LoginResult,
  type Outcome,
  type PasskeyItem,
  type Registered,
  type SecondFactor,
  type SessionAnswer,
  type SessionItem,
  type Tokens,
  type Trust,
  type WebauthnCredential,
  type WebauthnOptions,
  type WhoAmI,
} from "./client.js";
export { type DeviceStore, deviceKey, localStorageDeviceStore, memoryDeviceStore } from "./device-store.js";
export { LatchkeyError, type Problem } from "./errors.js";
export type { components, operations, paths } from "./schema.js";
