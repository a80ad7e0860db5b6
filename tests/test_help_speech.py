async def test_every_channel_down_warren_hears_it_plainly(synth, config_for, tmp_path):
    """Webhook refused and Home Assistant unreachable: the answer, then the plain truth."""
    from nabu_pipeline.scripted_llm import refused_url

    help_clip = synth("Help me!", "help_down")
    quiet = concat_wavs([6.0], tmp_path / "quiet.wav")
    with ScriptedLLMServer(Script(ttft_s=0.05)) as llm:
        config = config_for(
            llm.url,
            safety={
                "contact_name": "Mary",
                "contact_relation": "daughter",
                "alert_webhooks": [refused_url() + "/alert"],
                "home_assistant_notify": "mobile_app_marys_phone",
                "delivery_deadline_s": 3.0,
                "retry_base_delay_s": 0.5,
            },
        )
        import os

        os.environ["NABU_HA_URL"] = refused_url()
        os.environ["NABU_HA_TOKEN"] = "not-a-real-token"
        try:
            result = await talk(config, [help_clip, quiet], tmp_path / "out.wav")
        finally:
            del os.environ["NABU_HA_URL"], os.environ["NABU_HA_TOKEN"]
    replies = " ".join(t["reply"].strip() for t in result.turns)
    (alert,) = result.alerts
    print(f"\nevery channel down: Nabu said {replies!r}; attempts {alert.attempts}")
    assert llm.requests == []
    assert ANSWER in replies
    assert "I haven't been able to reach Mary yet. I'm still trying." in replies
    assert alert.delivered_at is None and min(alert.attempts.values()) >= 2
