//! Circuit breakers: stop a campaign that the API refuses as a whole instead of burning the
//! table (issue 10).
//!
//! - **Refused**: when the first `window` rows answered in a run all failed with the same
//!   definite error (same HTTP status, Engati code and message: a wrong template name, a wrong
//!   flow key), stop with exit 4. Row-specific refusals differ in their message (they name the
//!   number) and do not trip it.
//! - **Unavailable**: when `window` answers in a row may have been processed without an
//!   answer (5xx, timeouts, resets), the API is down: stop with exit 5 rather than turn the
//!   rest of the table into `unknown` rows.

use super::classify::Outcome;

/// Why the breaker stopped the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    /// The first rows were all refused alike (exit 4).
    Refused {
        /// Rows refused.
        rows: usize,
        /// The common error.
        error: String,
    },
    /// Answers in a row that may have been processed (exit 5).
    Unavailable {
        /// How many in a row.
        rows: usize,
        /// The last one.
        error: String,
    },
}

/// The breaker's state for one run.
#[derive(Debug)]
pub struct Breaker {
    window: usize,
    answered: usize,
    first: Option<(Option<u16>, Option<i64>, String)>,
    all_same_refusal: bool,
    maybe_in_a_row: usize,
}

impl Breaker {
    /// A breaker over the first `window` rows (0: never trips).
    pub fn new(window: usize) -> Self {
        Breaker {
            window,
            answered: 0,
            first: None,
            all_same_refusal: true,
            maybe_in_a_row: 0,
        }
    }

    /// Notes the final outcome of a request that covered `rows` rows; returns a trip.
    pub fn observe(&mut self, outcome: &Outcome, rows: usize) -> Option<Trip> {
        if self.window == 0 {
            return None;
        }
        match outcome {
            Outcome::Maybe { error, .. } => {
                self.maybe_in_a_row += rows;
                if self.maybe_in_a_row >= self.window {
                    return Some(Trip::Unavailable {
                        rows: self.maybe_in_a_row,
                        error: error.clone(),
                    });
                }
            }
            _ => self.maybe_in_a_row = 0,
        }
        if self.answered >= self.window {
            return None;
        }
        self.answered += rows;
        match outcome {
            Outcome::Refused {
                http_status,
                api_code,
                error,
            } => {
                let this = (Some(*http_status), *api_code, error.clone());
                match &self.first {
                    None => self.first = Some(this),
                    Some(f) if *f == this => {}
                    Some(_) => self.all_same_refusal = false,
                }
            }
            _ => self.all_same_refusal = false,
        }
        if self.answered >= self.window && self.all_same_refusal {
            let error = self.first.as_ref().map(|f| f.2.clone()).unwrap_or_default();
            return Some(Trip::Refused {
                rows: self.answered,
                error,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(msg: &str) -> Outcome {
        Outcome::Refused {
            http_status: 400,
            api_code: Some(1004),
            error: msg.into(),
        }
    }

    fn maybe() -> Outcome {
        Outcome::Maybe {
            http_status: Some(500),
            error: "HTTP 500".into(),
        }
    }

    fn sent() -> Outcome {
        Outcome::Sent {
            http_status: 200,
            api_code: Some(1000),
            message_id: None,
            response: String::new(),
        }
    }

    #[test]
    fn the_same_refusal_for_the_first_rows_trips_it() {
        let mut b = Breaker::new(3);
        assert_eq!(b.observe(&refused("no template x"), 1), None);
        assert_eq!(b.observe(&refused("no template x"), 1), None);
        assert!(matches!(
            b.observe(&refused("no template x"), 1),
            Some(Trip::Refused { rows: 3, .. })
        ));
    }

    #[test]
    fn different_or_successful_answers_do_not() {
        let mut b = Breaker::new(3);
        b.observe(&refused("bad number 1"), 1);
        b.observe(&refused("bad number 2"), 1);
        assert_eq!(b.observe(&refused("bad number 2"), 1), None);
        let mut b = Breaker::new(2);
        b.observe(&sent(), 1);
        assert_eq!(b.observe(&refused("x"), 1), None);
        assert_eq!(
            b.observe(&refused("x"), 1),
            None,
            "only the first rows count"
        );
        assert_eq!(Breaker::new(0).observe(&refused("x"), 100), None);
    }

    #[test]
    fn answers_that_may_have_been_processed_in_a_row_mean_unavailable() {
        let mut b = Breaker::new(3);
        b.observe(&maybe(), 1);
        b.observe(&maybe(), 1);
        b.observe(&sent(), 1);
        b.observe(&maybe(), 1);
        b.observe(&maybe(), 1);
        assert!(matches!(
            b.observe(&maybe(), 1),
            Some(Trip::Unavailable { rows: 3, .. })
        ));
    }
}
