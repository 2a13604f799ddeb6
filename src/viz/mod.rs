//! Rerun recordings of a run: the only module that imports `rerun`. One recording per run,
//! written to `<run dir>/particles.rrd` (a resumed run adds `particles.resume-<iteration>.rrd`
//! with the same recording id, so the viewer merges them) or streamed to a viewer.
//!
//! Timelines: `iteration` (fine-tuning iteration or toy actor step), `env_step`, and
//! `denoise_step` (only on the denoising-chain entities). Entity paths:
//! - `metrics/<key>`: every metric of `metrics.jsonl` (e.g. `metrics/critic/td_loss`)
//! - `probes/<i>/…`: one fixed probe state (see `particles.rs`)
//! - `rollout/camera/<key>`, `rollout/action/<name>`: a subsample of rollout frames with the
//!   executed action's first step
//! - `probes/0/actions_2d/{samples,peaks}`: the 2-D toy's sample cloud and its Q peaks
//!
//! A `Recorder` that is off does nothing, so training code calls it unconditionally.

pub mod finetune;
pub mod particles;
pub mod probe;
pub mod viewer;

use std::path::{Path, PathBuf};

use rerun::RecordingStream;

/// Where a recording goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// No recording.
    Off,
    /// An .rrd file.
    File(PathBuf),
    /// A viewer started from the venv (or PATH), streamed over gRPC.
    Spawn,
    /// A running viewer at this gRPC proxy URL (`rerun+http://127.0.0.1:9876/proxy`) or
    /// host:port.
    Connect(String),
}

impl Sink {
    /// The sink of the flags `--viewer spawn | connect [ADDR]` and `--no-record`; `None` =
    /// the run's default file.
    pub fn from_flags(viewer: &[String], no_record: bool) -> Result<Option<Sink>, String> {
        Ok(match (no_record, viewer) {
            (true, _) => Some(Sink::Off),
            (false, []) => None,
            (false, [mode]) if mode == "spawn" => Some(Sink::Spawn),
            (false, [mode]) if mode == "connect" => Some(Sink::Connect("127.0.0.1:9876".into())),
            (false, [mode, address]) if mode == "connect" => Some(Sink::Connect(address.clone())),
            (false, other) => {
                return Err(format!("--viewer: expected `spawn` or `connect [ADDR]`, got {:?}", other.join(" ")))
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("recording {target}: {message}")]
pub struct RecordingError {
    pub target: String,
    pub message: String,
}

pub struct Recorder {
    stream: Option<RecordingStream>,
}

/// The gRPC proxy URL of a `--viewer connect ADDR` argument.
pub fn proxy_url(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("rerun+http://{address}/proxy")
    }
}

impl Recorder {
    pub fn off() -> Self {
        Self { stream: None }
    }

    /// Opens the sink. `recording_id` ties the files of one run together.
    pub fn open(sink: &Sink, recording_id: &str) -> Result<Self, RecordingError> {
        let builder = rerun::RecordingStreamBuilder::new("rldt-vision").recording_id(recording_id);
        let error =
            |target: String| move |e: rerun::RecordingStreamError| RecordingError { target, message: e.to_string() };
        let stream = match sink {
            Sink::Off => return Ok(Self::off()),
            Sink::File(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| RecordingError { target: parent.display().to_string(), message: e.to_string() })?;
                }
                builder.save(path).map_err(error(path.display().to_string()))?
            }
            Sink::Spawn => {
                let options = rerun::SpawnOptions {
                    executable_path: viewer::find_viewer().ok().map(|p| p.display().to_string()),
                    ..Default::default()
                };
                builder.spawn_opts(&options).map_err(error("spawned viewer".into()))?
            }
            Sink::Connect(address) => {
                let url = proxy_url(address);
                builder.connect_grpc_opts(url.clone()).map_err(error(url))?
            }
        };
        Ok(Self { stream: Some(stream) })
    }

    pub fn is_on(&self) -> bool {
        self.stream.is_some()
    }

    pub(crate) fn stream(&self) -> Option<&RecordingStream> {
        self.stream.as_ref()
    }

    /// Sets the `iteration` and `env_step` timelines for what follows.
    pub fn set_time(&self, iteration: i64, env_step: Option<i64>) {
        if let Some(rec) = &self.stream {
            rec.set_time_sequence("iteration", iteration);
            if let Some(steps) = env_step {
                rec.set_time_sequence("env_step", steps);
            }
        }
    }

    /// Every value as a scalar series `metrics/<key>` (non-finite values are skipped).
    pub fn metrics<K: AsRef<str>>(&self, values: &[(K, f64)]) {
        if let Some(rec) = &self.stream {
            for (key, value) in values.iter().filter(|(_, v)| v.is_finite()) {
                let _ = rec.log(format!("metrics/{}", key.as_ref()), &rerun::Scalars::single(*value));
            }
        }
    }

    /// A u8 RGB image [H, W, 3].
    pub fn image(&self, path: &str, rgb: &[u8], size: usize) {
        if let Some(rec) = &self.stream {
            let _ = rec.log(path, &rerun::Image::from_rgb24(rgb.to_vec(), [size as u32, size as u32]));
        }
    }

    /// One rollout frame: the cameras at a chunk start and the first executed step's action
    /// (normalised), one series per named dimension.
    pub fn rollout_frame(&self, cameras: &[(&str, &[u8])], image_size: usize, action: &[f32], names: &[String]) {
        if let Some(rec) = &self.stream {
            for (key, rgb) in cameras {
                self.image(&format!("rollout/camera/{key}"), rgb, image_size);
            }
            for (value, name) in action.iter().zip(names) {
                let _ = rec.log(format!("rollout/action/{name}"), &rerun::Scalars::single(*value as f64));
            }
        }
    }

    /// Markdown shown in the viewer (static: the same at every time).
    pub fn note(&self, path: &str, markdown: &str) {
        if let Some(rec) = &self.stream {
            let _ = rec.log_static(path, &rerun::TextDocument::from_markdown(markdown));
        }
    }

    /// Writes everything buffered (a recording file is complete after this).
    pub fn flush(&self) -> Result<(), RecordingError> {
        match &self.stream {
            Some(rec) => {
                rec.flush_blocking().map_err(|e| RecordingError { target: "recording".into(), message: e.to_string() })
            }
            None => Ok(()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The recording files of a run directory, in order (`particles.rrd` first, then resumes by
/// iteration), or the file itself when `path` is an .rrd file.
pub fn recording_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<(i64, PathBuf)> = std::fs::read_dir(path)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let order = if name == "particles.rrd" {
                -1
            } else {
                name.strip_prefix("particles.resume-")?.strip_suffix(".rrd")?.parse().ok()?
            };
            Some((order, p))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// The file a run writes to: `particles.rrd`, or for a run resumed after `iteration`
/// completed iterations, `particles.resume-<iteration>.rrd` (never overwriting a recording).
pub fn run_recording_path(run_dir: &Path, resumed_after: Option<usize>) -> PathBuf {
    match resumed_after {
        None => run_dir.join("particles.rrd"),
        Some(iteration) => run_dir.join(format!("particles.resume-{iteration}.rrd")),
    }
}

/// The viewer layouts sent with a recording (the user can still rearrange everything).
pub mod layout {
    use rerun::blueprint::{
        Blueprint, BlueprintActivation, ContainerLike, Horizontal, Spatial2DView, Spatial3DView, Tabs,
        TextDocumentView, TimeSeriesView, Vertical,
    };

    use super::Recorder;

    fn send(recorder: &Recorder, root: ContainerLike) {
        if let Some(rec) = recorder.stream() {
            let _ = Blueprint::new(root).send(rec, BlueprintActivation { make_active: true, make_default: true });
        }
    }

    /// The toy: a large 2-D view of the particles, field and Q map; Q over steps; the notes.
    pub fn toy(recorder: &Recorder) {
        send(
            recorder,
            Horizontal::new([
                Spatial2DView::new("particles, field φ and Q (2-D actions)").with_origin("probes/0/actions_2d").into(),
                Vertical::new([
                    TimeSeriesView::new("Q at the particles").with_origin("probes/0/q").into(),
                    TextDocumentView::new("what is shown").with_origin("probes/0/axes").into(),
                ])
                .into(),
            ])
            .with_column_shares([2.0, 1.0])
            .into(),
        );
    }

    /// Fine-tuning: one tab per probe (3-D view, 2-D plane with the Q map, camera, notes)
    /// above the metric series.
    pub fn finetune(recorder: &Recorder, probes: usize, cameras: &[String]) {
        let tabs: Vec<ContainerLike> = (0..probes)
            .map(|i| {
                let mut views: Vec<ContainerLike> = vec![
                    Spatial3DView::new(format!("probe {i}: 3-D")).with_origin(format!("probes/{i}/actions_3d")).into(),
                    Spatial2DView::new(format!("probe {i}: plane + Q map"))
                        .with_origin(format!("probes/{i}/actions_2d"))
                        .into(),
                ];
                let mut side: Vec<ContainerLike> = cameras
                    .iter()
                    .map(|c| {
                        Spatial2DView::new(format!("probe {i}: {c}"))
                            .with_origin(format!("probes/{i}/camera/{c}"))
                            .into()
                    })
                    .collect();
                side.push(
                    TextDocumentView::new(format!("probe {i}: axes")).with_origin(format!("probes/{i}/axes")).into(),
                );
                views.push(Vertical::new(side).into());
                Horizontal::new(views).with_name(format!("probe {i}")).into()
            })
            .collect();
        let series: Vec<ContainerLike> = ["eval", "rollout", "critic", "actor", "svgd", "time"]
            .iter()
            .map(|group| TimeSeriesView::new(*group).with_origin(format!("metrics/{group}")).into())
            .collect();
        send(
            recorder,
            Vertical::new([Tabs::new(tabs).into(), Horizontal::new(series).into()]).with_row_shares([3.0, 1.0]).into(),
        );
    }
}
