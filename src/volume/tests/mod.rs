//! Unit tests of the volume core against in-memory fakes of its ports
//! (`fakes.rs`), under paused time: publish and its rollback at each step,
//! republish, unpublish racing a refresh, restore and adoption, target
//! bindings, and refreshes across token and lease lifetimes. The timing
//! rules themselves are table-tested where they live (`plan.rs`,
//! [`crate::timing`]); the integration suite keeps the real socket, tmpfs
//! mounts, cgroups, the Vault double and OpenBao.

mod fakes;
mod lifecycle;
mod publish;
mod refresh;
