//! Server features, one module per file (DESIGN "Modules"). [`default_modules`] is the list
//! the server enables; adding a XEP means adding a file here and one line in that list.

use std::sync::Arc;

use starling_core::Module;

pub mod disco;
pub mod ping;
pub mod version;

/// The modules enabled by default, in hook order.
pub fn default_modules() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(disco::Disco),
        Arc::new(ping::Ping),
        Arc::new(version::Version),
    ]
}
