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

/// The mark a state file records.
pub fn parse(text: &str, format: StateFormat) -> Result<Mark, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    // Both write 64-bit numbers as strings in places; accept either form.
    let number = |field: &str| -> Result<u64, String> {
        match &json[field] {
            Value::String(s) => s.parse().map_err(|_| format!("{field} {s:?} is not a number")),
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("{field} {n} is not a non-negative number")),
            _ => Err(format!("missing {field}")),
        }
    };
    let (level, round, step) = (number("height")?, number("round")?, number("step")?);
    let step = match (format, step) {
        (StateFormat::CometBft, 0..=3) => step,
        (StateFormat::Tmkms, 0..=2) => step + 1,
        _ => return Err(format!("step {step} is out of range for this format")),
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
        assert!(parse(r#"{"height":"x","round":0,"step":1}"#, StateFormat::CometBft).unwrap_err().contains("height"));
        assert!(parse(r#"{"height":"1","round":0,"step":3}"#, StateFormat::Tmkms).unwrap_err().contains("step 3"));
        assert!(parse("[", StateFormat::Tmkms).is_err());
    }
}
