//! Every entity under a CamelCase alias, e.g. `Users`, `Sessions`.

pub use super::audit_events::Entity as AuditEvents;
pub use super::data_keys::Entity as DataKeys;
pub use super::devices::Entity as Devices;
pub use super::keyring::Entity as Keyring;
pub use super::opaque_credentials::Entity as OpaqueCredentials;
pub use super::recovery_codes::Entity as RecoveryCodes;
pub use super::refresh_tokens::Entity as RefreshTokens;
pub use super::reset_tokens::Entity as ResetTokens;
pub use super::server_setup::Entity as ServerSetup;
pub use super::sessions::Entity as Sessions;
pub use super::signing_keys::Entity as SigningKeys;
pub use super::totp_credentials::Entity as TotpCredentials;
pub use super::user_roles::Entity as UserRoles;
pub use super::users::Entity as Users;
pub use super::webauthn_credentials::Entity as WebauthnCredentials;
