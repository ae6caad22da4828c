//! What a run leaves behind: history.json and metrics.csv, rewritten atomically after each epoch.

pub mod pictures;
pub mod plot;

use crate::error::Result;
use crate::files::atomic_write;
use std::path::Path;

/// One epoch's figures. `metric` is accuracy or Dice (mean of per-batch values, as Keras).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub metric: f64,
    pub test_loss: f64,
    pub test_metric: f64,
    /// Dice over every test pixel at once (segmentation only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_dice_whole: Option<f64>,
    /// The mean over classes of each class's IoU over the test pass (masks of classes only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_mean_iou: Option<f64>,
    pub seconds: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub task: String,
    /// `acc` or `dice`.
    pub metric: String,
    /// The backend that ran the latest epochs, as the `backend:` line names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
    pub epochs: Vec<EpochRecord>,
}

impl History {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("history serialises");
        atomic_write(&dir.join("history.json"), &json)?;
        let m = &self.metric;
        let mut csv = format!("epoch,loss,{m},test_loss,test_{m},test_dice_whole,test_mean_iou,seconds\n");
        let cell = |v: Option<f64>| v.map(|d| format!("{d:.6}")).unwrap_or_default();
        for e in &self.epochs {
            let (whole, iou) = (cell(e.test_dice_whole), cell(e.test_mean_iou));
            csv += &format!(
                "{},{:.6},{:.6},{:.6},{:.6},{whole},{iou},{:.4}\n",
                e.epoch, e.loss, e.metric, e.test_loss, e.test_metric, e.seconds
            );
        }
        atomic_write(&dir.join("metrics.csv"), csv.as_bytes())
    }

    pub fn read(dir: &Path) -> Result<History> {
        let path = dir.join("history.json");
        let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| crate::Error::bad_file(&path, format!("not a history file: {e}")))
    }
}

/// `class_scores.csv`: each class of pixels' share of the test pixels, Dice and IoU after the
/// last epoch (empty cells for a class in neither truth nor prediction).
pub fn write_class_scores(dir: &Path, scores: &[crate::train::ClassScore]) -> Result<()> {
    let total: u64 = scores.iter().map(|s| s.pixels).sum();
    let cell = |v: Option<f64>| v.map(|d| format!("{d:.6}")).unwrap_or_default();
    let mut csv = String::from("class,pixels,share,dice,iou\n");
    for (c, s) in scores.iter().enumerate() {
        let share = s.pixels as f64 / total.max(1) as f64;
        csv += &format!("{c},{},{share:.6},{},{}\n", s.pixels, cell(s.dice), cell(s.iou));
    }
    atomic_write(&dir.join("class_scores.csv"), csv.as_bytes())
}

/// `confusion.csv`: rows are true classes, columns predicted ones.
pub fn write_confusion(dir: &Path, counts: &[f32], classes: usize) -> Result<()> {
    let mut csv = String::from("true\\predicted");
    (0..classes).for_each(|c| csv += &format!(",{c}"));
    for (t, row) in counts.chunks(classes).enumerate() {
        csv += &format!("\n{t}");
        row.iter().for_each(|v| csv += &format!(",{}", *v as u64));
    }
    csv.push('\n');
    atomic_write(&dir.join("confusion.csv"), csv.as_bytes())
}
