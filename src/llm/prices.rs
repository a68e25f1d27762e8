//! Model prices, per million tokens. A built-in table covers common models; a JSON file named by
//! `RUNNER_PRICES` (or `<state dir>/prices.json`) adds to or overrides it:
//! `{"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60}}`.
//! A model not in the table costs 0, and the call is counted as unpriced; a job with a
//! `budget.usd` cannot call it (the budget could not limit it).

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The price of one model.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million prompt tokens.
    pub input_per_mtok: f64,
    /// USD per million completion tokens.
    pub output_per_mtok: f64,
}

const BUILT_IN: &[(&str, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("deepseek-chat", 0.27, 1.10),
];

/// Prices by model name.
#[derive(Clone, Debug)]
pub struct Prices(HashMap<String, Price>);

impl Default for Prices {
    fn default() -> Self {
        Prices(
            BUILT_IN
                .iter()
                .map(|(m, i, o)| {
                    (
                        m.to_string(),
                        Price {
                            input_per_mtok: *i,
                            output_per_mtok: *o,
                        },
                    )
                })
                .collect(),
        )
    }
}

impl Prices {
    /// The built-in table plus the entries of `file`, if given.
    pub fn load(file: Option<&Path>) -> Result<Prices, String> {
        let mut prices = Prices::default();
        let Some(file) = file else {
            return Ok(prices);
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the price table {}: {e}", file.display()))?;
        let extra: HashMap<String, Price> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "price table {}: {e} (expected {{\"model\": {{\"input_per_mtok\": 0.15, \"output_per_mtok\": 0.6}}}})",
                file.display()
            )
        })?;
        for (model, price) in &extra {
            if !(price.input_per_mtok >= 0.0 && price.output_per_mtok >= 0.0) {
                return Err(format!(
                    "price table {}: {model}: prices must be 0 or more",
                    file.display()
                ));
            }
        }
        prices.0.extend(extra);
        Ok(prices)
    }

    /// Cost of a call, or `None` when the model has no price. Provider prefixes (`openai/`) and
    /// dated suffixes (`-2024-07-18`) are tried off as well.
    pub fn cost(&self, model: &str, prompt: u64, completion: u64) -> Option<f64> {
        let price = self.find(model)?;
        Some(
            (prompt as f64 * price.input_per_mtok + completion as f64 * price.output_per_mtok)
                / 1e6,
        )
    }

    /// The price of `model` (tried as [`Prices::cost`] does), if it has one.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.find(model).copied()
    }

    fn find(&self, model: &str) -> Option<&Price> {
        let bare = model.rsplit('/').next().unwrap_or(model);
        for candidate in [model, bare] {
            if let Some(p) = self.0.get(candidate) {
                return Some(p);
            }
        }
        // `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`
        let mut name = bare;
        while let Some((head, _)) = name.rsplit_once('-') {
            if let Some(p) = self.0.get(head) {
                return Some(p);
            }
            name = head;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_are_priced_per_million_tokens() {
        let p = Prices::default();
        let cost = p.cost("gpt-4o-mini", 1_000_000, 1_000_000).unwrap();
        assert!((cost - 0.75).abs() < 1e-9);
        assert!(p.cost("openai/gpt-4o-mini-2024-07-18", 1000, 0).is_some());
    }

    #[test]
    fn unknown_models_have_no_price() {
        assert_eq!(Prices::default().cost("mock", 10, 10), None);
    }

    #[test]
    fn a_price_file_adds_models() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(
            &f,
            r#"{"mock": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}"#,
        )
        .unwrap();
        let p = Prices::load(Some(&f)).unwrap();
        assert!((p.cost("mock", 1_000_000, 0).unwrap() - 1.0).abs() < 1e-9);
        std::fs::write(&f, r#"{"mock": {"input": 1.0}}"#).unwrap();
        assert!(Prices::load(Some(&f))
            .unwrap_err()
            .contains("input_per_mtok"));
    }
}
