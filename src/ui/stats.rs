//! The short per-frontend/backend history the charts draw (from the status samples the
//! membership stats poller publishes), so a freshly loaded page has full charts.

use crate::status::{ProxySample, StatsSample};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// One frontend's or backend's series, aligned with [`HistoryView::times`]; `None` where the
/// proxy did not exist at that sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    pub scur: Vec<Option<u64>>,
    pub smax: Vec<Option<u64>>,
    pub req_rate: Vec<Option<u64>>,
    pub rate: Vec<Option<u64>>,
}

/// The history in column form, as the snapshot carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HistoryView {
    /// Epoch milliseconds of each sample, oldest first.
    pub times: Vec<u64>,
    pub frontends: BTreeMap<String, Series>,
    pub backends: BTreeMap<String, Series>,
}

/// The last `capacity` samples' frontend and backend rows (members are only kept as the latest
/// sample: the charts are per frontend and backend).
pub(crate) struct History {
    capacity: usize,
    samples: VecDeque<HistoryPoint>,
}

struct HistoryPoint {
    time_ms: u64,
    frontends: BTreeMap<String, ProxySample>,
    backends: BTreeMap<String, ProxySample>,
}

impl History {
    pub(crate) fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(1),
            samples: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, sample: &StatsSample) {
        // A sample from the past (a clock step back) restarts the history rather than
        // drawing a chart that runs backwards.
        if self
            .samples
            .back()
            .is_some_and(|last| last.time_ms > sample.time_ms)
        {
            self.samples.clear();
        }
        self.samples.push_back(HistoryPoint {
            time_ms: sample.time_ms,
            frontends: sample.frontends.clone(),
            backends: sample.backends.clone(),
        });
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    pub(crate) fn view(&self) -> HistoryView {
        let len = self.samples.len();
        let mut view = HistoryView {
            times: self.samples.iter().map(|p| p.time_ms).collect(),
            ..HistoryView::default()
        };
        for (index, point) in self.samples.iter().enumerate() {
            fill(&mut view.frontends, &point.frontends, index, len);
            fill(&mut view.backends, &point.backends, index, len);
        }
        view
    }
}

fn fill(
    series: &mut BTreeMap<String, Series>,
    rows: &BTreeMap<String, ProxySample>,
    index: usize,
    len: usize,
) {
    for (key, row) in rows {
        let s = series.entry(key.clone()).or_insert_with(|| Series {
            scur: vec![None; len],
            smax: vec![None; len],
            req_rate: vec![None; len],
            rate: vec![None; len],
        });
        s.scur[index] = Some(row.scur);
        s.smax[index] = Some(row.smax);
        s.req_rate[index] = Some(row.req_rate);
        s.rate[index] = Some(row.rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time_ms: u64, frontends: &[(&str, u64)]) -> StatsSample {
        StatsSample {
            time_ms,
            frontends: frontends
                .iter()
                .map(|(key, scur)| {
                    let row = ProxySample {
                        status: "OPEN".into(),
                        scur: *scur,
                        smax: scur * 2,
                        req_rate: scur * 10,
                        rate: scur + 1,
                    };
                    (key.to_string(), row)
                })
                .collect(),
            ..StatsSample::default()
        }
    }

    fn check(pushes: &[StatsSample], capacity: usize, times: &[u64], web: &[Option<u64>]) {
        let mut history = History::new(capacity);
        pushes.iter().for_each(|s| history.push(s));
        let view = history.view();
        assert_eq!(view.times, times);
        let scur = view.frontends.get("web").map(|s| s.scur.clone());
        assert_eq!(scur.unwrap_or_default(), web);
    }

    #[test]
    fn series_align_with_times_and_gaps_are_null() {
        check(&[], 3, &[], &[]);
        check(
            &[
                sample(1, &[("web", 4)]),
                sample(2, &[("db", 1)]),
                sample(3, &[("web", 5), ("db", 2)]),
            ],
            10,
            &[1, 2, 3],
            &[Some(4), None, Some(5)],
        );
    }

    #[test]
    fn keeps_only_the_newest_samples() {
        let pushes: Vec<StatsSample> = (1..=5).map(|t| sample(t, &[("web", t)])).collect();
        check(&pushes, 3, &[3, 4, 5], &[Some(3), Some(4), Some(5)]);
    }

    #[test]
    fn a_clock_step_back_restarts_the_history() {
        let pushes = [sample(10, &[("web", 1)]), sample(5, &[("web", 2)])];
        check(&pushes, 3, &[5], &[Some(2)]);
    }

    #[test]
    fn all_columns_are_kept() {
        let mut history = History::new(5);
        history.push(&sample(1, &[("web", 3)]));
        let view = history.view();
        let web = &view.frontends["web"];
        assert_eq!(
            (&web.smax, &web.req_rate, &web.rate),
            (&vec![Some(6)], &vec![Some(30)], &vec![Some(4)])
        );
    }
}
