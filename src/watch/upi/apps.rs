//! Merchant payment apps whose per-payment signal is a phone notification, not a bank SMS.
//!
//! A business QR (PhonePe Business, Paytm for Business, Google Pay for Business, BharatPe)
//! settles to the bank in batches, so the bank SMS says nothing per payment; the app's
//! notification ("Received ₹500 from X") does. Forwarder apps (SmsForwarder, the
//! notification-capable fork of "SMS to URL forwarder") post those notifications with the
//! app's package name. Only the packages listed here are trusted, and only with an ingest
//! token: a notification from any other app is stored as ignored.

/// One supported merchant app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    /// The Android package name the forwarder reports.
    pub package: &'static str,
    /// Display name, reported as the alert's bank.
    pub name: &'static str,
}

/// The supported apps. Package names as published on Google Play.
pub const APPS: &[App] = &[
    App {
        package: "com.phonepe.app.business",
        name: "PhonePe Business",
    },
    App {
        package: "com.paytm.business",
        name: "Paytm for Business",
    },
    App {
        package: "com.google.android.apps.nbu.paisa.merchant",
        name: "Google Pay for Business",
    },
    App {
        package: "com.bharatpe.app",
        name: "BharatPe",
    },
];

/// The supported app with this package name (exact, case-insensitive).
pub fn app_for_package(package: &str) -> Option<&'static App> {
    let package = package.trim();
    APPS.iter()
        .find(|a| a.package.eq_ignore_ascii_case(package))
}

/// Whether a forwarder's "from" field is an Android package name (`com.example.app`) rather
/// than an SMS sender: lowercase segments joined by dots, at least two dots.
pub fn looks_like_package(from: &str) -> bool {
    let from = from.trim();
    from.matches('.').count() >= 2
        && from.split('.').all(|seg| {
            seg.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages() {
        assert_eq!(
            app_for_package("com.paytm.business").map(|a| a.name),
            Some("Paytm for Business")
        );
        assert!(app_for_package("com.phonepe.app").is_none());
        assert!(looks_like_package(
            "com.google.android.apps.nbu.paisa.merchant"
        ));
        assert!(!looks_like_package("VM-HDFCBK-S"));
        assert!(!looks_like_package("+919876543210"));
        assert!(!looks_like_package("a.b"));
    }
}
