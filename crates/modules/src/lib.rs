//! Server features, one module per file (DESIGN "Modules"). [`default_modules`] is the list
//! the server enables; adding a XEP means adding a file here and one line in that list.

use std::sync::Arc;

use starling_core::Module;

pub mod disco;
pub mod last;
pub mod offline;
pub mod ping;
pub mod presence;
pub mod privacy;
pub mod roster;
pub mod time;
pub mod vcard;
pub mod version;

/// The modules enabled by default, in hook order.
pub fn default_modules() -> Vec<Arc<dyn Module>> {
    let (roster, presence) = roster::roster_and_presence(Default::default());
    vec![
        // Privacy lists supersede every other delivery rule (XEP-0016 §2.2 rule 4): first.
        Arc::new(privacy::Privacy::default()),
        Arc::new(disco::Disco),
        Arc::new(ping::Ping),
        Arc::new(version::Version),
        roster,
        presence,
        Arc::new(offline::Offline::default()),
        Arc::new(time::EntityTime),
        Arc::new(vcard::VCard),
        Arc::new(last::LastActivity::default()),
    ]
}
