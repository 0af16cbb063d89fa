//! The last-signed state files of CometBFT (`priv_validator_state.json`) and tmkms, read so that a
//! migration carries the high-water mark over instead of starting from zero.

use serde_json::Value;

use crate::ratchet::Mark;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFormat {
    /// `{"height":"12","round":0,"step":3,...}`: step 1 propose, 2 prevote, 3 precommit, as sigil.
    CometBft,
    /// `{"height":"12","round":"0","step":2,"block_id":...}`: step 0 proposal, 1 prevote, 2 precommit.
    Tmkms,
}

/// Why a state file gives no mark.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateFileError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{field} {value} is not a non-negative number")]
    NotANumber { field: &'static str, value: String },
    #[error("step {0} is out of range for this format")]
    Step(u64),
}

/// The mark a state file records.
pub fn parse(text: &str, format: StateFormat) -> Result<Mark, StateFileError> {
    let json: Value = serde_json::from_str(text).map_err(|e| StateFileError::NotJson(e.to_string()))?;
    // Both write 64-bit numbers as strings in places; accept either form.
    let number = |field: &'static str| -> Result<u64, StateFileError> {
        let not_a_number = |value: String| StateFileError::NotANumber { field, value };
        match &json[field] {
            Value::String(s) => s.parse().map_err(|_| not_a_number(format!("{s:?}"))),
            Value::Number(n) => n.as_u64().ok_or_else(|| not_a_number(n.to_string())),
            _ => Err(StateFileError::Missing(field)),
        }
    };
    let (level, round, step) = (number("height")?, number("round")?, number("step")?);
    let step = match (format, step) {
        (StateFormat::CometBft, 0..=3) => step,
        (StateFormat::Tmkms, 0..=2) => step + 1,
        _ => return Err(StateFileError::Step(step)),
    };
    Ok(Mark { level, round, step: step as u8 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats() {
        let cometbft = r#"{"height":"361402","round":0,"step":3,"signature":"c2ln","signbytes":"AB"}"#;
        assert_eq!(parse(cometbft, StateFormat::CometBft), Ok(Mark { level: 361_402, round: 0, step: 3 }));
        let tmkms = r#"{"height":"2","round":"1","step":2,"block_id":null}"#;
        assert_eq!(parse(tmkms, StateFormat::Tmkms), Ok(Mark { level: 2, round: 1, step: 3 }));
        assert!(parse(r#"{"height":"x","round":0,"step":1}"#, StateFormat::CometBft)
            .unwrap_err()
            .to_string()
            .contains("height"));
        assert!(parse(r#"{"height":"1","round":0,"step":3}"#, StateFormat::Tmkms)
            .unwrap_err()
            .to_string()
            .contains("step 3"));
        assert!(parse("[", StateFormat::Tmkms).is_err());
    }
}
