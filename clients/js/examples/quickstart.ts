import { createClient, LatchkeyError, localStorageDeviceStore } from "@latchkey/client";

const latchkey = createClient({
  baseUrl: "https://auth.example",
  deviceStore: localStorageDeviceStore(), // keeps the device credential (lk_d_) per user
});

export async function signIn(username: string, password: string, askForCode: () => Promise<string>) {
  try {
    const result = await latchkey.login(username, password, { deviceName: "My app" });
    const session =
      result.kind === "mfa" ? await latchkey.loginTotp(result.mfaToken, { code: await askForCode() }) : result.session;
    console.log(`signed in: user ${session.user_id}, ${session.aal}, new device: ${session.new_device}`);
  } catch (err) {
    if (err instanceof LatchkeyError && err.code === "invalid_credentials") return false;
    if (err instanceof LatchkeyError && err.code === "account_locked") console.log(`locked for ${err.retryAfter} s`);
    throw err;
  }
  const me = await latchkey.whoami(); // an expired session token is refreshed and the call retried
  const { token } = await latchkey.jwt(); // a 5-minute EdDSA JWT for your other services
  await fetch("https://api.example/orders", { headers: { authorization: `Bearer ${token}` } });
  console.log(`${me.username} has ${(await latchkey.sessions()).length} sessions`);
  return true;
}
