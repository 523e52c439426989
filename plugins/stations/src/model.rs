//! The inventory model: stations, their battery slots, and the changes the
//! API records, as pure functions on a [`Station`] (no I/O here).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A station is low on charged batteries at or below this many.
pub(crate) const LOW_CHARGED: usize = 2;

/// The state of one battery in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    Charged,
    Charging,
    Depleted,
    Faulty,
}

impl State {
    pub(crate) const ALL: [Self; 4] = [Self::Charged, Self::Charging, Self::Depleted, Self::Faulty];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Charged => "charged",
            Self::Charging => "charging",
            Self::Depleted => "depleted",
            Self::Faulty => "faulty",
        }
    }
}

/// Where a station is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Location {
    pub(crate) address: String,
    pub(crate) lat: f64,
    pub(crate) lon: f64,
}

/// One battery in a slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Battery {
    pub(crate) slot: u32,
    pub(crate) id: String,
    pub(crate) state: State,
}

/// A station as stored: one key-value entry, replaced whole by
/// compare-and-swap, so a change is atomic and `version` orders changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Station {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) location: Location,
    /// Bumped by every change: feeds keep the highest they have seen.
    pub(crate) version: u64,
    /// Number for the next battery id this station makes up.
    pub(crate) next_battery: u64,
    /// One battery per slot: the capacity is the number of slots.
    pub(crate) batteries: Vec<Battery>,
}

/// Why a change was refused: the HTTP status and a JSON error.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "bad_request", detail)
    }

    pub(crate) fn body(&self) -> Value {
        json!({"error": self.code, "detail": self.detail})
    }
}

/// A change to a station, as a POST body names it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// A rider swaps: a charged battery out (`out`, or any), a depleted one in
    /// (`battery_in`, or a made-up id) in the same slot.
    Swap {
        out: Option<String>,
        battery_in: Option<String>,
    },
    /// A depleted battery (`battery`, or any) goes on charge.
    StartCharging { battery: Option<String> },
    /// A charging battery (`battery`, or any) is charged.
    ChargingComplete { battery: Option<String> },
    /// A battery (by id, or any in `state`) is reported faulty.
    Fault {
        battery: Option<String>,
        state: Option<State>,
    },
    /// Faulty batteries (at most `count`, or all) are replaced by charged
    /// ones.
    Restock { count: Option<usize> },
}

impl Change {
    /// The name feeds carry in `change`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Swap { .. } => "swap",
            Self::StartCharging { .. } => "charging",
            Self::ChargingComplete { .. } => "charged",
            Self::Fault { .. } => "fault",
            Self::Restock { .. } => "restock",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapBody {
    battery_out: Option<String>,
    battery_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatteryBody {
    battery: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    battery: Option<String>,
    state: Option<State>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockBody {
    count: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    // An empty body is `{}`, so `curl -X POST` works as it reads.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|err| Refusal::bad_request(format!("malformed body: {err}")))
}

impl Change {
    /// The change a POST to `action` (`swaps`, `charging`, `charged`,
    /// `faults`, `restock`) with `body` asks for.
    pub(crate) fn parse(action: &str, body: &[u8]) -> Result<Self, Refusal> {
        match action {
            "swaps" => {
                let body: SwapBody = parse(body)?;
                Ok(Self::Swap {
                    out: body.battery_out,
                    battery_in: body.battery_in,
                })
            }
            "charging" => Ok(Self::StartCharging {
                battery: parse::<BatteryBody>(body)?.battery,
            }),
            "charged" => Ok(Self::ChargingComplete {
                battery: parse::<BatteryBody>(body)?.battery,
            }),
            "faults" => {
                let body: FaultBody = parse(body)?;
                if body.battery.is_none() && body.state.is_none() {
                    return Err(Refusal::bad_request(
                        "name the faulty battery (\"battery\") or the state of one (\"state\")",
                    ));
                }
                Ok(Self::Fault {
                    battery: body.battery,
                    state: body.state,
                })
            }
            "restock" => {
                let body: RestockBody = parse(body)?;
                if body.count == Some(0) {
                    return Err(Refusal::bad_request("\"count\" must be at least 1"));
                }
                Ok(Self::Restock { count: body.count })
            }
            other => Err(Refusal::new(404, "no_view", format!("no action {other:?}"))),
        }
    }
}

impl Station {
    /// Apply `change`, or say why it cannot be: the station is left as it
    /// was on a refusal.
    pub(crate) fn apply(&mut self, change: &Change) -> Result<(), Refusal> {
        match change {
            Change::Swap { out, battery_in } => {
                if let Some(id) = battery_in
                    && self.batteries.iter().any(|b| b.id == *id)
                {
                    return Err(Refusal::new(
                        409,
                        "battery_already_here",
                        format!("battery {id:?} is already in station {}", self.id),
                    ));
                }
                if battery_in.as_ref().is_some_and(|id| id.is_empty()) {
                    return Err(Refusal::bad_request("\"battery_in\" is empty"));
                }
                let slot = self.find(out.as_deref(), State::Charged, "no_charged_battery")?;
                let new_id = match battery_in {
                    Some(id) => id.clone(),
                    None => self.make_id("R"),
                };
                let battery = &mut self.batteries[slot];
                battery.id = new_id;
                battery.state = State::Depleted;
            }
            Change::StartCharging { battery } => {
                let slot = self.find(battery.as_deref(), State::Depleted, "no_depleted_battery")?;
                self.batteries[slot].state = State::Charging;
            }
            Change::ChargingComplete { battery } => {
                let slot = self.find(battery.as_deref(), State::Charging, "no_charging_battery")?;
                self.batteries[slot].state = State::Charged;
            }
            Change::Fault { battery, state } => {
                let slot = match (battery, state) {
                    (Some(id), _) => {
                        let slot = self.slot_of(id)?;
                        if self.batteries[slot].state == State::Faulty {
                            return Err(Refusal::new(
                                409,
                                "already_faulty",
                                format!("battery {id:?} is already faulty"),
                            ));
                        }
                        slot
                    }
                    (None, Some(state)) => self.find(None, *state, "no_battery_in_state")?,
                    (None, None) => return Err(Refusal::bad_request("no battery named")),
                };
                self.batteries[slot].state = State::Faulty;
            }
            Change::Restock { count } => {
                let faulty: Vec<usize> = (0..self.batteries.len())
                    .filter(|&slot| self.batteries[slot].state == State::Faulty)
                    .take(count.unwrap_or(usize::MAX))
                    .collect();
                if faulty.is_empty() {
                    return Err(Refusal::new(
                        409,
                        "no_faulty_battery",
                        format!("station {} has no faulty battery to replace", self.id),
                    ));
                }
                for slot in faulty {
                    let id = self.make_id("N");
                    let battery = &mut self.batteries[slot];
                    battery.id = id;
                    battery.state = State::Charged;
                }
            }
        }
        self.version += 1;
        Ok(())
    }

    /// The slot of battery `id` if named (it must be in `state`), else the
    /// first slot in `state`.
    fn find(&self, id: Option<&str>, state: State, none: &'static str) -> Result<usize, Refusal> {
        match id {
            Some(id) => {
                let slot = self.slot_of(id)?;
                let found = self.batteries[slot].state;
                if found == state {
                    Ok(slot)
                } else {
                    Err(Refusal::new(
                        409,
                        none,
                        format!("battery {id:?} is {}, not {}", found.name(), state.name()),
                    ))
                }
            }
            None => self
                .batteries
                .iter()
                .position(|b| b.state == state)
                .ok_or_else(|| {
                    Refusal::new(
                        409,
                        none,
                        format!("station {} has no {} battery", self.id, state.name()),
                    )
                }),
        }
    }

    fn slot_of(&self, id: &str) -> Result<usize, Refusal> {
        self.batteries
            .iter()
            .position(|b| b.id == id)
            .ok_or_else(|| {
                Refusal::new(
                    409,
                    "battery_not_here",
                    format!("battery {id:?} is not in station {}", self.id),
                )
            })
    }

    fn make_id(&mut self, kind: &str) -> String {
        self.next_battery += 1;
        format!("S{}-{kind}{}", self.id, self.next_battery)
    }

    /// Counts by state.
    pub(crate) fn count(&self, state: State) -> usize {
        self.batteries.iter().filter(|b| b.state == state).count()
    }

    /// The station as the API and the feeds show it.
    pub(crate) fn to_json(&self) -> Value {
        let mut inventory = serde_json::Map::new();
        for state in State::ALL {
            inventory.insert(state.name().to_owned(), self.count(state).into());
        }
        let charged = self.count(State::Charged);
        json!({
            "id": self.id,
            "name": self.name,
            "location": self.location,
            "capacity": self.batteries.len(),
            "inventory": inventory,
            "low": charged <= LOW_CHARGED,
            "version": self.version,
            "batteries": self.batteries,
        })
    }
}

/// The stations made at first start: `(name, address, lat, lon, slots by
/// state: charged, charging, depleted, faulty)`.
const SEEDS: &[(&str, &str, f64, f64, [u32; 4])] = &[
    (
        "Alexanderplatz",
        "Alexanderplatz 1, Berlin",
        52.5219,
        13.4132,
        [6, 2, 1, 1],
    ),
    (
        "Kreuzberg",
        "Oranienstraße 25, Berlin",
        52.5009,
        13.4180,
        [4, 2, 2, 0],
    ),
    (
        "Prenzlauer Berg",
        "Kastanienallee 7, Berlin",
        52.5380,
        13.4098,
        [8, 1, 2, 1],
    ),
    (
        "Tempelhof",
        "Tempelhofer Damm 1, Berlin",
        52.4731,
        13.4030,
        [2, 3, 2, 1],
    ),
    (
        "Charlottenburg",
        "Kantstraße 50, Berlin",
        52.5058,
        13.3049,
        [5, 1, 1, 1],
    ),
];

/// The seed stations, ids 1 to 5.
pub(crate) fn seeds() -> Vec<Station> {
    (1u64..)
        .zip(SEEDS)
        .map(|(id, (name, address, lat, lon, counts))| {
            let mut batteries = Vec::new();
            for (state, count) in State::ALL.into_iter().zip(counts) {
                for _ in 0..*count {
                    let slot = u32::try_from(batteries.len()).unwrap_or(u32::MAX) + 1;
                    batteries.push(Battery {
                        slot,
                        id: format!("S{id}-B{slot:02}"),
                        state,
                    });
                }
            }
            Station {
                id,
                name: (*name).to_owned(),
                location: Location {
                    address: (*address).to_owned(),
                    lat: *lat,
                    lon: *lon,
                },
                version: 1,
                next_battery: 0,
                batteries,
            }
        })
        .collect()
}
