"""Home Assistant's ONVIF events as its integration reads them (onvif-zeep-async's
PullPointManager, then PullMessages with HA's parsing of the two motion topics), against
camstream, as tests/onvif_events.rs drives it:

  ha_events.py HOST PORT USER PASSWORD SECONDS

Pulls until the cell motion topic said IsMotion true and then false, or SECONDS passed. Prints
one JSON object: {"capabilities": {...}, "messages": [...]} or {"refused": reason}.
"""
import asyncio
import datetime as dt
import json
import sys


async def main(host, port, user, password, seconds):
    from onvif import ONVIFCamera

    cam = ONVIFCamera(host, int(port), user, password)
    out = {}
    manager = None
    try:
        await cam.update_xaddrs()
        caps = await cam.get_capabilities()
        # get_capabilities() answers the serialised structure (a dict).
        ev = (caps or {}).get("Events") or {}
        out["capabilities"] = {
            "events_xaddr": ev.get("XAddr"),
            "pullpoint": bool(ev.get("WSPullPointSupport")),
        }
        events = await cam.create_events_service()
        props = await events.GetEventProperties()
        out["fixed_topic_set"] = bool(props.FixedTopicSet)
        manager = await cam.create_pullpoint_manager(dt.timedelta(seconds=60), lambda: None)
        await manager.set_synchronization_point()
        service = manager.get_service()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(seconds)
        messages = []
        saw_true = saw_false_after = False
        while loop.time() < deadline and not saw_false_after:
            # HA's PULLPOINT_POLL_TIME and PULLPOINT_MESSAGE_LIMIT.
            result = await service.PullMessages(
                {"MessageLimit": 100, "Timeout": dt.timedelta(seconds=60)}
            )
            for msg in result.NotificationMessage or []:
                # As homeassistant/components/onvif/parsers.py reads them.
                topic = msg.Topic._value_1.rstrip("/.")
                payload = msg.Message._value_1
                data = payload.Data.SimpleItem[0]
                source = {s.Name: s.Value for s in payload.Source.SimpleItem}
                messages.append(
                    {
                        "topic": topic,
                        "name": data.Name,
                        "value": data.Value,
                        "op": payload.PropertyOperation,
                        "source": source,
                        "at": str(payload.UtcTime),
                    }
                )
                if topic == "tns1:RuleEngine/CellMotionDetector/Motion":
                    if data.Value == "true":
                        saw_true = True
                    elif saw_true:
                        saw_false_after = True
        out["messages"] = messages
        # As the manager renews: a relative time from get_next_termination_time().
        renewed = await manager._subscription.Renew(
            cam.get_next_termination_time(dt.timedelta(seconds=30))
        )
        out["renewed"] = renewed.TerminationTime is not None
    except Exception as e:  # ONVIFError, zeep's Fault, aiohttp's errors: all a refusal here
        out["refused"] = f"{type(e).__name__}: {e}"
    finally:
        if manager is not None:
            await manager.shutdown()
        await cam.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
