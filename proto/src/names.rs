//! The lowercase names that JSON, SQL and logs use for protobuf enums (http-api.md).

use crate::v1::{DeviceStatus, EventAction, EventReason, Platform, PresenceStatus};

/// A name that is not one of the contract's names for that kind of value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

/// One table per enum: variant <-> contract name. `UNSPECIFIED` has no name.
macro_rules! contract_names {
    ($ty:ident, $kind:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every named variant, in declaration order.
            pub const NAMED: &'static [$ty] = &[$($ty::$variant),+];

            /// The contract's name, or `None` for `Unspecified`.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($ty::$variant => Some($name),)+
                    _ => None,
                }
            }

            /// Parses a contract name (exact, lowercase).
            pub fn from_name(name: &str) -> Result<Self, UnknownName> {
                match name {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName { kind: $kind, name: name.to_owned() }),
                }
            }
        }
    };
}

contract_names!(Platform, "platform", {
    Ios => "ios", Android => "android", Windows => "windows", Mac => "mac", Linux => "linux",
    Web => "web", Ipad => "ipad", AndroidPad => "android_pad", MiniProgram => "mini_program",
});

contract_names!(EventAction, "action", {
    Login => "login", Logout => "logout", Disconnect => "disconnect", Status => "status",
});

contract_names!(EventReason, "reason", {
    Register => "register", Unregister => "unregister", LinkClose => "link_close",
    Timeout => "timeout", AdminKick => "admin_kick", PushExpired => "push_expired",
    CustomStatus => "custom_status",
});

contract_names!(PresenceStatus, "user status", {
    Offline => "offline", Online => "online", PushOnline => "push_online",
});

contract_names!(DeviceStatus, "device status", {
    Online => "online", PushOnline => "push_online",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_name_round_trips() {
        for p in Platform::NAMED {
            let name = p.name().expect("named variants have names");
            assert_eq!(Platform::from_name(name), Ok(*p));
        }
        assert_eq!(Platform::NAMED.len(), 9);
        assert_eq!(Platform::Unspecified.name(), None);
    }

    #[test]
    fn unknown_names_are_rejected_with_their_kind() {
        let err = Platform::from_name("IOS").unwrap_err();
        assert_eq!(err.to_string(), "unknown platform `IOS`");
        assert!(EventReason::from_name("kicked").is_err());
    }
}
