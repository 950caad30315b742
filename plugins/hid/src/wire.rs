//! The JSON the browser and the API send, turned into [`Input`]s.
//!
//! A JSIP `INFO` or `MESSAGE` with `Content-Type: hid` carries one event object, or an
//! array of them applied in order:
//!
//! | object | meaning |
//! |---|---|
//! | `{"key":"KeyA","down":true}` | a key by W3C `KeyboardEvent.code` goes down or up |
//! | `{"button":"left","down":true}` | left, right, middle, back, forward |
//! | `{"x":16384,"y":16384}` | absolute pointer, both 0..=32767 |
//! | `{"dx":5,"dy":-3}` | relative pointer |
//! | `{"wheel":-1}` | wheel notches, up > 0 |

use jsipd_plugin_api::serde_json::{Map, Value};

use crate::device::{button, ABS_MAX};
use crate::keys;
use crate::state::Input;

/// A JSON object: an event, or a `POST /mouse` body.
pub type Object = Map<String, Value>;

/// The events of one body, or what is wrong with it (for a 400's Reason).
pub fn events(body: &Value) -> Result<Vec<Input>, String> {
    // A client may also send the JSON as a string.
    if let Value::String(s) = body {
        let v: Value = jsipd_plugin_api::serde_json::from_str(s)
            .map_err(|e| format!("the Body string is not JSON: {e}"))?;
        return events(&v);
    }
    match body {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| event(v).map_err(|e| format!("event {i}: {e}")))
            .collect(),
        v => Ok(vec![event(v)?]),
    }
}

fn down(o: &Object) -> Result<bool, String> {
    o.get("down")
        .and_then(Value::as_bool)
        .ok_or_else(|| "down must be true or false".to_string())
}

fn int(o: &Object, k: &str) -> Result<i64, String> {
    o.get(k)
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("{k} must be a whole number"))
}

pub fn coordinate(o: &Object, k: &str) -> Result<u16, String> {
    let v = int(o, k)?;
    u16::try_from(v)
        .ok()
        .filter(|v| *v <= ABS_MAX)
        .ok_or_else(|| format!("{k} = {v} is outside 0..={ABS_MAX}"))
}

pub fn offset(o: &Object, k: &str) -> Result<i32, String> {
    let v = int(o, k)?;
    i32::try_from(v)
        .ok()
        .filter(|v| v.abs() <= 32767)
        .ok_or_else(|| format!("{k} = {v} is outside -32767..=32767"))
}

pub fn wheel(o: &Object) -> Result<i8, String> {
    let v = int(o, "wheel")?;
    i8::try_from(v)
        .ok()
        .filter(|v| *v != i8::MIN)
        .ok_or_else(|| format!("wheel = {v} is outside -127..=127"))
}

pub fn button_bit(name: &Value) -> Result<u8, String> {
    name.as_str()
        .and_then(button::by_name)
        .ok_or_else(|| format!("button {name} is not one of left, right, middle, back, forward"))
}

fn event(v: &Value) -> Result<Input, String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("an event is a JSON object, not {v}"))?;
    if let Some(code) = o.get("key") {
        let key = code
            .as_str()
            .and_then(keys::by_code)
            .ok_or_else(|| format!("key {code} is not a KeyboardEvent.code this keyboard has"))?;
        return Ok(Input::Key {
            usage: key.usage,
            down: down(o)?,
        });
    }
    if let Some(name) = o.get("button") {
        return Ok(Input::Button {
            bit: button_bit(name)?,
            down: down(o)?,
        });
    }
    if o.contains_key("x") || o.contains_key("y") {
        return Ok(Input::MoveTo {
            x: coordinate(o, "x")?,
            y: coordinate(o, "y")?,
        });
    }
    if o.contains_key("dx") || o.contains_key("dy") {
        return Ok(Input::MoveBy {
            dx: offset(o, "dx")?,
            dy: offset(o, "dy")?,
        });
    }
    if o.contains_key("wheel") {
        return Ok(Input::Wheel(wheel(o)?));
    }
    Err(format!(
        "{v} is not an event: expected key+down, button+down, x+y, dx+dy or wheel"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsipd_plugin_api::serde_json::json;

    #[test]
    fn events_and_their_errors() {
        let v = json!([
            {"key":"ShiftLeft","down":true},
            {"button":"right","down":false},
            {"x":0,"y":32767},
            {"dx":-5,"dy":7},
            {"wheel":-2}
        ]);
        assert_eq!(
            events(&v).unwrap(),
            [
                Input::Key {
                    usage: 0xe1,
                    down: true
                },
                Input::Button {
                    bit: 2,
                    down: false
                },
                Input::MoveTo { x: 0, y: 32767 },
                Input::MoveBy { dx: -5, dy: 7 },
                Input::Wheel(-2),
            ]
        );
        assert_eq!(
            events(&json!(r#"{"key":"KeyA","down":false}"#)).unwrap(),
            [Input::Key {
                usage: 4,
                down: false
            }]
        );
        for (bad, says) in [
            (json!({"key":"KeyÄ","down":true}), "KeyboardEvent.code"),
            (json!({"key":"KeyA"}), "down must be"),
            (json!({"x":5}), "y must be"),
            (json!({"x":-1,"y":0}), "outside 0..=32767"),
            (json!({"x":40000,"y":0}), "outside 0..=32767"),
            (json!({"wheel":300}), "outside -127..=127"),
            (json!({"button":"fourth","down":true}), "not one of left"),
            (json!({"hello":1}), "is not an event"),
            (
                json!([{"wheel":1}, 5]),
                "event 1: an event is a JSON object",
            ),
            (json!("{not json"), "not JSON"),
        ] {
            let e = events(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
