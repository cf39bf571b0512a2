//! The device service (`/onvif/device_service`), read only: identity, clock, capabilities,
//! services, scopes and network interfaces.

use super::events::{EVENTS_PATH, NS_EVENTS};
use super::soap::{Fault, Request, Xml};
use super::{DEVICE_PATH, MEDIA_PATH, Onvif, Reached, base_url};

/// Operations implemented here.
pub const OPERATIONS: &[&str] = &[
    "GetDeviceInformation",
    "GetSystemDateAndTime",
    "GetCapabilities",
    "GetServices",
    "GetScopes",
    "GetNetworkInterfaces",
];

const NS_DEVICE: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_MEDIA: &str = "http://www.onvif.org/ver10/media/wsdl";

/// Writes the answer to `req` if it is a device operation.
pub fn answer(
    o: &Onvif,
    req: &Request,
    at: &Reached,
    now: i64,
    x: &mut Xml,
) -> Option<Result<(), Fault>> {
    let base = base_url(at);
    match req.operation.as_str() {
        "GetDeviceInformation" => x.node("tds:GetDeviceInformationResponse", &[], |x| {
            x.leaf("tds:Manufacturer", "camstream");
            x.leaf("tds:Model", &o.identity.hardware);
            x.leaf("tds:FirmwareVersion", env!("CARGO_PKG_VERSION"));
            x.leaf("tds:SerialNumber", &o.identity.serial);
            x.leaf("tds:HardwareId", &o.identity.hardware);
        }),
        "GetSystemDateAndTime" => x.node("tds:GetSystemDateAndTimeResponse", &[], |x| {
            x.node("tds:SystemDateAndTime", &[], |x| {
                x.leaf("tt:DateTimeType", "NTP");
                x.leaf("tt:DaylightSavings", "false");
                x.node("tt:TimeZone", &[], |x| x.leaf("tt:TZ", "UTC0"));
                let (y, mo, d, h, mi, s) = civil(now);
                x.node("tt:UTCDateTime", &[], |x| {
                    x.node("tt:Time", &[], |x| {
                        x.leaf("tt:Hour", &h.to_string());
                        x.leaf("tt:Minute", &mi.to_string());
                        x.leaf("tt:Second", &s.to_string());
                    });
                    x.node("tt:Date", &[], |x| {
                        x.leaf("tt:Year", &y.to_string());
                        x.leaf("tt:Month", &mo.to_string());
                        x.leaf("tt:Day", &d.to_string());
                    });
                });
            });
        }),
        "GetCapabilities" => x.node("tds:GetCapabilitiesResponse", &[], |x| {
            x.node("tds:Capabilities", &[], |x| {
                x.node("tt:Device", &[], |x| {
                    x.leaf("tt:XAddr", &format!("{base}{DEVICE_PATH}"));
                    x.node("tt:Network", &[], |x| {
                        x.leaf("tt:IPFilter", "false");
                        x.leaf("tt:ZeroConfiguration", "false");
                        x.leaf("tt:IPVersion6", "false");
                        x.leaf("tt:DynDNS", "false");
                    });
                    x.node("tt:System", &[], |x| {
                        x.leaf("tt:DiscoveryResolve", "false");
                        x.leaf("tt:DiscoveryBye", "true");
                        x.leaf("tt:RemoteDiscovery", "false");
                        x.leaf("tt:SystemBackup", "false");
                        x.leaf("tt:SystemLogging", "false");
                        x.leaf("tt:FirmwareUpgrade", "false");
                        x.node("tt:SupportedVersions", &[], |x| {
                            x.leaf("tt:Major", "2");
                            x.leaf("tt:Minor", "0");
                        });
                    });
                    x.node("tt:Security", &[], |x| {
                        for (k, v) in [
                            ("tt:TLS1.1", "false"),
                            ("tt:TLS1.2", "false"),
                            ("tt:OnboardKeyGeneration", "false"),
                            ("tt:AccessPolicyConfig", "false"),
                            ("tt:X.509Token", "false"),
                            ("tt:SAMLToken", "false"),
                            ("tt:KerberosToken", "false"),
                            ("tt:RELToken", "false"),
                        ] {
                            x.leaf(k, v);
                        }
                    });
                });
                // Schema order: Device, Events, Media.
                x.node("tt:Events", &[], |x| {
                    x.leaf("tt:XAddr", &format!("{base}{EVENTS_PATH}"));
                    x.leaf("tt:WSSubscriptionPolicySupport", "false");
                    x.leaf("tt:WSPullPointSupport", "true");
                    x.leaf("tt:WSPausableSubscriptionManagerInterfaceSupport", "false");
                });
                x.node("tt:Media", &[], |x| {
                    x.leaf("tt:XAddr", &format!("{base}{MEDIA_PATH}"));
                    x.node("tt:StreamingCapabilities", &[], |x| {
                        x.leaf("tt:RTPMulticast", "false");
                        x.leaf("tt:RTP_TCP", "true");
                        x.leaf("tt:RTP_RTSP_TCP", "true");
                    });
                });
            });
        }),
        "GetServices" => x.node("tds:GetServicesResponse", &[], |x| {
            for (ns, path) in [
                (NS_DEVICE, DEVICE_PATH),
                (NS_MEDIA, MEDIA_PATH),
                (NS_EVENTS, EVENTS_PATH),
            ] {
                x.node("tds:Service", &[], |x| {
                    x.leaf("tds:Namespace", ns);
                    x.leaf("tds:XAddr", &format!("{base}{path}"));
                    x.node("tds:Version", &[], |x| {
                        x.leaf("tt:Major", "2");
                        x.leaf("tt:Minor", "0");
                    });
                });
            }
        }),
        "GetScopes" => x.node("tds:GetScopesResponse", &[], |x| {
            for s in o.identity.scopes() {
                x.node("tds:Scopes", &[], |x| {
                    x.leaf("tt:ScopeDef", "Fixed");
                    x.leaf("tt:ScopeItem", &s);
                });
            }
        }),
        "GetNetworkInterfaces" => {
            let interfaces = interfaces();
            x.node("tds:GetNetworkInterfacesResponse", &[], |x| {
                for i in &interfaces {
                    x.node(
                        "tds:NetworkInterfaces",
                        &[("token", i.name.as_str())],
                        |x| {
                            x.leaf("tt:Enabled", if i.up { "true" } else { "false" });
                            x.node("tt:Info", &[], |x| {
                                x.leaf("tt:Name", &i.name);
                                x.leaf("tt:HwAddress", &i.mac);
                                x.leaf("tt:MTU", &i.mtu.to_string());
                            });
                            x.node("tt:IPv4", &[], |x| {
                                x.leaf(
                                    "tt:Enabled",
                                    if i.ipv4.is_empty() { "false" } else { "true" },
                                );
                                x.node("tt:Config", &[], |x| {
                                    for (addr, prefix) in &i.ipv4 {
                                        x.node("tt:Manual", &[], |x| {
                                            x.leaf("tt:Address", &addr.to_string());
                                            x.leaf("tt:PrefixLength", &prefix.to_string());
                                        });
                                    }
                                    x.leaf("tt:DHCP", "false");
                                });
                            });
                        },
                    );
                }
            })
        }
        _ => return None,
    }
    Some(Ok(()))
}

/// Unix seconds → (year, month, day, hour, minute, second), UTC.
pub fn civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let p = crate::utc::split(t.saturating_mul(crate::utc::SECOND));
    // The fields are in range by construction (month 1-12, day 1-31, ...).
    let f = |v: i64| v as u32;
    (p.y, f(p.mo), f(p.d), f(p.h), f(p.mi), f(p.s))
}

/// A network interface as GetNetworkInterfaces shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    /// Kernel name.
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Operationally up.
    pub up: bool,
    /// IPv4 addresses with prefix lengths.
    pub ipv4: Vec<(std::net::Ipv4Addr, u8)>,
}

/// The host's interfaces other than loopback, read from /sys and /proc (nothing is changed).
fn interfaces() -> Vec<Interface> {
    let locals =
        local_addresses(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default());
    let routes = routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    for name in names {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{name}/{f}"))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let ipv4 = locals
            .iter()
            .filter_map(|a| {
                routes
                    .iter()
                    .filter(|r| r.0 == name && u32::from(*a) & r.2 == r.1 && r.2 != 0)
                    .max_by_key(|r| r.2.count_ones())
                    .map(|r| (*a, r.2.count_ones() as u8))
            })
            .collect();
        out.push(Interface {
            mac: read("address"),
            mtu: read("mtu").parse().unwrap_or(1500),
            up: read("operstate") != "down",
            ipv4,
            name,
        });
    }
    out
}

/// Host addresses from /proc/net/fib_trie (entries marked `/32 host LOCAL`).
fn local_addresses(trie: &str) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in trie.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.parse().ok();
        } else if t.contains("/32 host LOCAL")
            && let Some(a) = last
            && !a.is_loopback()
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// The host's IPv4 addresses other than loopback.
pub fn host_addresses() -> Vec<std::net::Ipv4Addr> {
    local_addresses(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default())
}

/// (interface, network, mask) from /proc/net/route (hex, host byte order of a little-endian
/// machine is handled by reading the bytes back as network order).
fn routes(table: &str) -> Vec<(String, u32, u32)> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| u32::from_be_bytes(v.to_le_bytes()))
            };
            Some((f.first()?.to_string(), hex(f.get(1)?)?, hex(f.get(7)?)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_709_208_000 + 61), (2024, 2, 29, 12, 1, 1));
        assert_eq!(
            super::super::auth::parse_datetime("2026-12-02T13:22:01Z").map(civil),
            Some((2026, 12, 2, 13, 22, 1))
        );
    }

    #[test]
    fn proc_tables() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 192.168.1.0/24 2 0 2\n        |-- 192.168.1.7\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert_eq!(
            local_addresses(trie),
            vec!["192.168.1.7".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let r = routes(table);
        assert_eq!(
            r,
            vec![(
                "eth0".to_string(),
                u32::from_be_bytes([192, 168, 1, 0]),
                0xFFFF_FF00
            )]
        );
    }
}
