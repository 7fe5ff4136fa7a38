//! The decision procedure for one update request. (being written)
use super::*;
use crate::site::Site;

/// Decide what a device gets for this request. Pure apart from the [`Ports`] it is given.
pub fn plan_update(
    _site: &Site,
    _req: &UpdateRequest,
    _state: Option<DeviceState>,
    _now: i64,
    _ports: &mut dyn Ports,
) -> Outcome {
    todo!()
}
