//! Checks of the vendor provisioning sections `[provisioning]`, `[settings]`, `[vendors.*]`,
//! `[[groups]]` and `[devices.*]` (with file:line:column diagnostics like the rest of
//! [`super`]). The rules themselves live in [`crate::settings::check`], so that each vendor
//! module keeps its own (raw key syntax, options); this only places them in the file.

use super::{Seg, Validator, I, K};
use crate::config::SiteConfig;
use crate::settings::PathPart;

impl Validator<'_> {
    pub(super) fn check_vendor_settings(&mut self, c: &SiteConfig) {
        for p in crate::settings::check(c) {
            let path: Vec<Seg<'_>> = p
                .path
                .iter()
                .map(|part| match part {
                    PathPart::Key(k) => K(k.as_str()),
                    PathPart::Index(i) => I(*i),
                })
                .collect();
            self.push(&path, p.warning, p.message);
        }
    }
}
