//! The one step publish and refresh share: fetch what the templates ask
//! for, render, and write the files ([`Materialiser`]). What differs between
//! a publish, a re-creation and a refresh is an explicit [`Mode`], never a
//! flag.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::Error;
use super::live::{LiveSecret, LiveVolume};
use super::memory::{Charge, cost};
use super::ports::SecretSource;
use crate::metrics::Metrics;
use crate::render::{self, Rendered, Renderer};
use crate::secret::Secret;
use crate::storage::{FileContent, Payload, Prepared, VolumeRoots, WriteOptions, WriteOutcome};
use crate::timing::{self, Priority, fairness};
use crate::vault::{self, Caller, SecretRequest};

/// Rendered files, before the token file is added, with the reservation
/// that holds their memory until they are written (the files' own cost is
/// charged then).
pub(super) struct Files {
    /// Each template's path and its bytes.
    pub files: render::RenderedFiles,
    held: Option<Arc<Charge>>,
}

/// Why files are being made.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode<'a> {
    /// A new volume: every `secret` call the templates make is fetched,
    /// while the pod waits.
    Publish,
    /// A volume whose root vanished, made again from its kept answers:
    /// only what has no answer is fetched, while the pod waits.
    Recreate,
    /// A scheduled refresh: `due` is fetched again (and what has no
    /// answer); a failed re-fetch keeps the previous answer.
    Refresh {
        /// The secrets to fetch again.
        due: &'a HashSet<SecretRequest>,
    },
}

impl Mode<'_> {
    /// A pod waits for this.
    fn publishing(self) -> bool {
        matches!(self, Self::Publish | Self::Recreate)
    }

    fn refetches(self, request: &SecretRequest) -> bool {
        match self {
            Self::Refresh { due } => due.contains(request),
            Self::Publish | Self::Recreate => false,
        }
    }
}

/// What Vault said along the way that the caller acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// A request was refused with 403: the token may have been revoked.
    pub denied: bool,
    /// Vault did not answer, or answered sealed.
    pub outage: bool,
}

impl Seen {
    /// Takes note of a Vault error.
    pub fn note(&mut self, error: &vault::Error) {
        self.denied |= error.is_permission_denied();
        self.outage |= error.is_outage();
    }
}

/// Where the files go.
pub(super) enum WriteAt {
    /// A root prepared for its first files: written, then sealed.
    First(Box<dyn Prepared>),
    /// The volume's sealed root at its target.
    Sealed,
}

/// Fetches, renders and writes one volume's files.
#[derive(Debug)]
pub(super) struct Materialiser {
    /// Where secrets come from.
    pub vault: Arc<dyn SecretSource>,
    /// Compiles (with a cache) and renders on the render threads.
    pub renderer: Arc<Renderer>,
    /// Where files are held.
    pub roots: Arc<dyn VolumeRoots>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest payload per volume.
    pub max_payload_bytes: u64,
    /// `--min-refresh-interval`: floor for static re-reads.
    pub min_interval: Duration,
}

impl Materialiser {
    /// Fetches what `mode` asks for, concurrently, and renders. Templates
    /// whose `secret` calls depend on fetched data ask for more, fetched in
    /// another round. During a refresh a failed fetch keeps the previous
    /// answer when there is one.
    pub async fn render(
        &self,
        volume: &mut LiveVolume,
        mode: Mode<'_>,
        seen: &mut Seen,
    ) -> Result<Files, Error> {
        let mut wanted: Vec<SecretRequest> = match mode {
            Mode::Publish => volume.templates.requests().to_vec(),
            _ if volume.secrets.is_empty() => volume.templates.requests().to_vec(),
            _ => volume.secrets.iter().map(|t| t.request.clone()).collect(),
        };
        let static_interval = self.static_interval(volume, mode);
        for _round in 0..=render::MAX_SECRETS_PER_VOLUME {
            self.fetch_round(volume, mode, &wanted, static_interval, seen)
                .await?;
            let reservation = Arc::new(volume.memory.reservation());
            let answers: Vec<(SecretRequest, Secret<Vec<u8>>)> = volume
                .secrets
                .iter()
                .filter(|t| wanted.contains(&t.request))
                .filter_map(|t| Some((t.request.clone(), t.answer.clone()?)))
                .collect();
            // Parsed and rendered on the render threads, never on the async
            // workers.
            let rendered = self
                .renderer
                .render_off_thread(
                    Arc::clone(&volume.templates),
                    answers,
                    Arc::clone(&reservation) as Arc<dyn render::Reserve>,
                )
                .await;
            match rendered? {
                Rendered::Files(files) => {
                    // Forget secrets the templates no longer ask for.
                    volume.secrets.retain(|t| wanted.contains(&t.request));
                    return Ok(Files {
                        files,
                        held: Some(reservation),
                    });
                }
                Rendered::NeedsSecrets(asked) => wanted.extend(asked),
            }
        }
        Err(render::Error::TooManySecrets {
            count: wanted.len(),
        }
        .into())
    }

    /// Fetches every wanted secret without an answer, plus what `mode`
    /// fetches again, and applies the answers.
    async fn fetch_round(
        &self,
        volume: &mut LiveVolume,
        mode: Mode<'_>,
        wanted: &[SecretRequest],
        static_interval: Duration,
        seen: &mut Seen,
    ) -> Result<(), Error> {
        let to_fetch: Vec<(SecretRequest, Priority)> = wanted
            .iter()
            .filter(|r| {
                mode.refetches(r)
                    || !volume
                        .secrets
                        .iter()
                        .any(|t| &t.request == *r && t.answer.is_some())
            })
            .map(|r| (r.clone(), fetch_priority(volume, mode, r)))
            .collect();
        if to_fetch.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let Some(token) = volume.token.usable(now).cloned() else {
            return Err(Error::NoVaultToken);
        };
        // Every answer is charged as it is read, before it is held; once
        // kept, it is part of the volume's own cost.
        let meter = volume.memory.reservation();
        let (vault, at, tenant) = (&self.vault, &volume.endpoint, volume.tenant());
        let results = join_all(to_fetch.iter().map(|(request, priority)| {
            let caller = if mode.publishing() {
                Caller::publish(tenant)
            } else {
                Caller::refresh(tenant, *priority)
            };
            let (token, meter) = (&token, &meter);
            async move { vault.fetch(at, caller, token, request, meter).await }
        }))
        .await;
        let now = Instant::now();
        let mut first_error = None;
        for ((request, _), result) in to_fetch.into_iter().zip(results) {
            let existing = volume.secrets.iter().position(|t| t.request == request);
            let kept = existing.is_some_and(|i| volume.secrets[i].answer.is_some());
            match result {
                Ok(response) => {
                    let live = LiveSecret::from_response(
                        request,
                        response,
                        static_interval,
                        timing::draw(),
                    );
                    match existing {
                        Some(i) => volume.secrets[i] = live,
                        None => volume.secrets.push(live),
                    }
                }
                Err(vault::Error::Held { retry_after, .. }) if !mode.publishing() && kept => {
                    // Held back, not failed: the previous value stays.
                    let i = existing.expect("checked above");
                    volume.secrets[i].deferred(now, retry_after, timing::draw());
                }
                Err(source) => {
                    seen.note(&source);
                    if let Some(i) = existing {
                        volume.secrets[i].failed(now, source.retry_after(), timing::draw());
                        if kept && !mode.publishing() {
                            let error = vault::withhold_for(&request, source);
                            tracing::warn!(volume.id = %volume.id, vault.path = request.shown_path(), %error, "Re-fetching a secret failed; keeping the previous value");
                            continue;
                        }
                    }
                    first_error.get_or_insert(Error::Fetch {
                        path: request.shown_path().to_owned(),
                        source: vault::withhold_for(&request, source),
                    });
                }
            }
        }
        // What the meter admitted moves to the volume's own charge (the
        // replaced answers are gone), then the meter lets go.
        volume.cost.kept_answers = volume.kept_bytes();
        volume.force_charge();
        drop(meter);
        first_error.map_or(Ok(()), Err)
    }

    /// The volume's static re-read interval, raised to
    /// `--min-refresh-interval`; a publish says so when it is.
    fn static_interval(&self, volume: &LiveVolume, mode: Mode<'_>) -> Duration {
        let (interval, clamped) =
            fairness::clamp_interval(volume.spec().static_interval, self.min_interval);
        if clamped && matches!(mode, Mode::Publish) {
            self.metrics.observe_interval_clamped(volume.tenant());
            tracing::info!(
                volume.id = %volume.id,
                pod.namespace = %volume.tenant(),
                asked_secs = volume.spec().static_interval.as_secs_f64(),
                used_secs = interval.as_secs_f64(),
                "staticSecretRefreshInterval is below --min-refresh-interval; static secrets are re-read at the floor instead"
            );
        }
        interval
    }

    /// Writes a rendered file set (plus the token file) atomically, at
    /// `at`, on the blocking pool (file system calls and mounts never run
    /// on the async workers). The files' cost must fit the node's memory
    /// budget before anything is written; a refused or failed write keeps
    /// the previous files and their charge. A sealed root whose files are
    /// unchanged is not written.
    pub async fn write(
        &self,
        volume: &mut LiveVolume,
        files: Files,
        at: WriteAt,
    ) -> Result<WriteOutcome, Error> {
        let mode = volume.file_mode();
        let Files { files, held } = files;
        let mut payload: Payload = files
            .into_iter()
            .map(|(path, bytes)| (path, FileContent { bytes, mode }))
            .collect();
        if let (Some(path), Some(session)) = (&volume.spec().token_file, &volume.token.session) {
            payload.insert(
                path.clone(),
                FileContent {
                    bytes: Secret::new(session.token.expose().as_bytes().to_vec()),
                    mode,
                },
            );
        }
        let options = WriteOptions {
            gid: volume.placement.fs_group,
            dir_mode: dir_mode(mode),
            max_bytes: self.max_payload_bytes,
        };
        let before = volume.cost.files;
        volume.cost.files = cost::files_cost(&payload);
        if let Err(exhausted) = volume.charge() {
            volume.cost.files = before;
            return Err(exhausted.into());
        }
        // The files' cost now holds what the render's reservation held.
        drop(held);
        let target = volume.placement.target.as_path().to_path_buf();
        let written = match at {
            WriteAt::First(mut prepared) => {
                off_runtime(move || {
                    let written = prepared.write(&payload, options)?;
                    let leftover = prepared.seal(&target)?;
                    // The staging mount goes after the pod has its answer.
                    if !leftover.is_empty() {
                        tokio::task::spawn_blocking(move || drop(leftover));
                    }
                    Ok(written)
                })
                .await
            }
            WriteAt::Sealed => {
                let (roots, id) = (Arc::clone(&self.roots), volume.id.clone());
                off_runtime(move || roots.update(&target, id.as_str(), &payload, options)).await
            }
        };
        let written = match written {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(storage)) => Err(Error::Storage(storage)),
            Err(stopped) => Err(stopped),
        };
        if written.is_err() {
            volume.cost.files = before;
            volume.force_charge();
        }
        written
    }

    /// The template outputs as they are in the volume, for a token-only
    /// rewrite when the answers they came from are not kept.
    pub fn files_in_volume(&self, volume: &LiveVolume) -> Option<Files> {
        let target = volume.placement.target.as_path();
        // What is read is at most the payload limit, reserved first.
        let held = Arc::new(volume.memory.reservation());
        held.resize(self.max_payload_bytes).ok()?;
        let files = volume
            .templates
            .paths()
            .map(|p| {
                self.roots
                    .read(target, p, self.max_payload_bytes)
                    .ok()
                    .flatten()
                    .map(|bytes| (p.clone(), bytes))
            })
            .collect::<Option<_>>()?;
        Some(Files {
            files,
            held: Some(held),
        })
    }
}

/// How much fetching `request` matters (see [`fairness::fetch_priority`]):
/// replacing a lease or certificate is urgent, re-reading a static secret
/// whose value the volume has is cosmetic.
fn fetch_priority(volume: &LiveVolume, mode: Mode<'_>, request: &SecretRequest) -> Priority {
    let expires = mode
        .refetches(request)
        .then(|| {
            volume
                .secrets
                .iter()
                .find(|t| &t.request == request)
                // A static secret with no value yet (restored from a record
                // that kept none) is needed for the render: not cosmetic.
                .and_then(|t| match (t.expires_at, &t.answer) {
                    (Some(_), _) => Some(true),
                    (None, Some(_)) => Some(false),
                    (None, None) => None,
                })
        })
        .flatten();
    fairness::fetch_priority(mode.publishing(), expires)
}

/// Runs blocking work (mounts, file system calls) on tokio's blocking
/// pool, so it never stalls the workers that answer kubelet. A panic in
/// `work` is a bug and propagates.
pub(super) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::ShuttingDown),
    }
}

/// Directory mode matching a file mode: each class that may read may also
/// traverse.
pub(super) fn dir_mode(file_mode: u32) -> u32 {
    let mut mode = file_mode & 0o777;
    for (read, exec) in [(0o400, 0o100), (0o040, 0o010), (0o004, 0o001)] {
        if mode & read != 0 {
            mode |= exec;
        }
    }
    mode | 0o100
}

#[cfg(test)]
mod tests {
    use super::dir_mode;

    #[test]
    fn directories_are_traversable_by_whoever_may_read() {
        assert_eq!(dir_mode(0o444), 0o555);
        assert_eq!(dir_mode(0o440), 0o550);
        assert_eq!(dir_mode(0o400), 0o500);
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o000), 0o100);
    }
}
