//! A device's `Login`, checked without I/O: what the gateway requires of the fields before it
//! looks up the app, verifies the token or calls the registry.

use presence_proto::{
    DEFAULT_APP_ID,
    codes::LoginErrorCode,
    limits::{MAX_ID_LEN, MAX_TOKEN_LEN, is_valid_id, is_valid_text},
    v1::{Login, Platform},
};

/// A `Login` whose fields are within the contract's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidLogin {
    /// The app named, or [`DEFAULT_APP_ID`] when the device named none.
    pub app_id: String,
    pub user_id: String,
    pub device_id: String,
    pub platform: Platform,
    pub token: String,
    pub client_version: String,
    pub push_enabled: bool,
}

/// Why a `Login` was refused before any I/O: the `LoginError` the device gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: LoginErrorCode,
    pub message: &'static str,
}

const NO_PLATFORM: Refusal = Refusal { code: LoginErrorCode::BadRequest, message: "platform is required" };
const BAD_FIELDS: Refusal = Refusal {
    code: LoginErrorCode::BadRequest,
    message: "user_id and device_id are required: 1 to 256 bytes without control characters",
};

/// Checks the fields of `login`: a named platform, user and device ids of 1 to [`MAX_ID_LEN`]
/// bytes, an app id and client version of at most that, a token of at most [`MAX_TOKEN_LEN`].
pub fn validate_login(login: Login) -> Result<ValidLogin, Refusal> {
    let app_id = if login.app_id.is_empty() { DEFAULT_APP_ID.to_owned() } else { login.app_id };
    let platform = Platform::try_from(login.platform).ok().filter(|p| *p != Platform::Unspecified);
    let Some(platform) = platform else { return Err(NO_PLATFORM) };
    let fields_ok = is_valid_id(&app_id)
        && is_valid_id(&login.user_id)
        && is_valid_id(&login.device_id)
        && is_valid_text(&login.client_version, MAX_ID_LEN)
        && login.token.len() <= MAX_TOKEN_LEN;
    if !fields_ok {
        return Err(BAD_FIELDS);
    }
    Ok(ValidLogin {
        app_id,
        user_id: login.user_id,
        device_id: login.device_id,
        platform,
        token: login.token,
        client_version: login.client_version,
        push_enabled: login.push_enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Login {
        Login {
            app_id: String::new(),
            user_id: "u".into(),
            platform: Platform::Ios as i32,
            device_id: "d".into(),
            token: "t".into(),
            client_version: String::new(),
            push_enabled: true,
        }
    }

    #[test]
    fn a_complete_login_is_valid_and_defaults_the_app() {
        let valid = validate_login(login()).unwrap();
        assert_eq!(valid.app_id, DEFAULT_APP_ID);
        assert_eq!((valid.platform, valid.push_enabled), (Platform::Ios, true));
        let named = validate_login(Login { app_id: "a".into(), ..login() }).unwrap();
        assert_eq!(named.app_id, "a");
    }

    #[test]
    fn the_platform_is_required() {
        for platform in [Platform::Unspecified as i32, 999] {
            assert_eq!(validate_login(Login { platform, ..login() }), Err(NO_PLATFORM));
        }
        // Checked first: a login missing both hears about the platform.
        assert_eq!(
            validate_login(Login { platform: 0, user_id: String::new(), ..login() }),
            Err(NO_PLATFORM)
        );
    }

    #[test]
    fn ids_must_be_present_and_short() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let max = "x".repeat(MAX_ID_LEN);
        for bad in [
            Login { user_id: String::new(), ..login() },
            Login { device_id: String::new(), ..login() },
            Login { user_id: long.clone(), ..login() },
            Login { device_id: long.clone(), ..login() },
            Login { app_id: long.clone(), ..login() },
            Login { client_version: long.clone(), ..login() },
            Login { token: "t".repeat(MAX_TOKEN_LEN + 1), ..login() },
        ] {
            assert_eq!(validate_login(bad), Err(BAD_FIELDS));
        }
        let at_limits = Login {
            app_id: max.clone(),
            user_id: max.clone(),
            device_id: max.clone(),
            client_version: max,
            token: "t".repeat(MAX_TOKEN_LEN),
            ..login()
        };
        assert!(validate_login(at_limits).is_ok());
    }

    #[test]
    fn the_message_names_the_limit() {
        assert!(BAD_FIELDS.message.contains(&MAX_ID_LEN.to_string()));
    }
}
