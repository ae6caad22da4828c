//! Data sets as u8 arrays ready for upload: samples `[n, c, h, w]` and labels or masks.

pub mod fetch;
pub mod folders;
pub mod idx;
pub mod locate;
pub mod manage;
pub mod masks;
pub mod mnist;
pub mod warwick;

use crate::error::{Error, Result};
use crate::graph::Target;
use crate::model::Shape;

/// One split: `x` holds `n` samples of `shape`, `y` one label each (classes) or one mask each.
#[derive(Clone, Debug)]
pub struct Split {
    pub x: Vec<u8>,
    pub y: Vec<u8>,
    pub n: usize,
}

impl Split {
    /// The first `limit` samples (all when `limit` is `None`).
    pub fn truncate(&mut self, limit: Option<usize>, sample: usize, label: usize) {
        if let Some(limit) = limit {
            self.n = self.n.min(limit);
            self.x.truncate(self.n * sample);
            self.y.truncate(self.n * label);
        }
    }
}

/// A line naming the files of a folder that were passed over, if any (the first five).
pub fn skipped_line(skipped: &[std::path::PathBuf]) -> Option<String> {
    let shown: Vec<String> = skipped.iter().take(5).map(|p| p.display().to_string()).collect();
    let more = if skipped.len() > 5 { format!(" and {} more", skipped.len() - 5) } else { String::new() };
    (!skipped.is_empty())
        .then(|| format!("skipped {} files that are not images of the set: {}{more}", skipped.len(), shown.join(", ")))
}

/// What a `--data` folder of the user's holds, instead of a task's built-in set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// An IDX classification set laid out like MNIST (Fashion-MNIST, KMNIST, EMNIST digits): its
    /// four files, gzipped or not; image size and classes come from the files.
    Idx,
    /// PNG or JPEG images in a folder per class: `train/<class>/` and `test/<class>/`, or
    /// `<class>/` with `--test-split`.
    Classes,
    /// Segmentation: `train/images/NAME.{png,jpg}` with `train/masks/NAME.png` (two values),
    /// and `test/` likewise, any size.
    Masks,
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub test: Split,
    pub sample: Shape,
    pub target: Target,
}

impl Dataset {
    /// u8 values per label: 1 for a class index, the sample's pixel count for a mask.
    pub fn label_len(&self) -> usize {
        match self.target {
            Target::Classes(_) => 1,
            Target::Mask | Target::Segments(_) => self.sample.h * self.sample.w,
        }
    }

    /// Keeps the first `train` / `test` samples; an empty split is an error.
    pub fn limit(&mut self, train: Option<usize>, test: Option<usize>) -> Result<()> {
        let (s, l) = (self.sample.len(), self.label_len());
        self.train.truncate(train, s, l);
        self.test.truncate(test, s, l);
        for (name, n) in [("--train-limit", self.train.n), ("--test-limit", self.test.n)] {
            if n == 0 {
                return Err(Error::Config(format!("{name} leaves no samples")));
            }
        }
        Ok(())
    }
}
