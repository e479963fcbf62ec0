async def test_record_and_list(api):
    action = await api.record(user="alice")
    page = await api.list(as_="alice")
    assert [a["uuid"] for a in page["objects"]] == [action["uuid"]]
    assert page["meta"]["total_count"] == 1


def test_server_process_prints_admin_key(server):
    import urllib.request
    from conftest import basic
    req = urllib.request.Request(server.url + "/api/audit/v1/action/",
                                 headers=basic("admin", server.admin_key))
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
