"""URLs the screenshots are taken from (netviz_lab/screenshots.py); no browser needed."""
from netviz_lab.screenshots import asset_graph_url, check_url


def test_asset_graph_url_expands_every_group_once_sorted():
    url = asset_graph_url("http://127.0.0.1:3000/", ["routers", "caretta", "routers"])
    assert url == "http://127.0.0.1:3000/asset-groups?expanded=global@global:caretta,global@global:routers"


def test_asset_graph_url_without_groups():
    assert asset_graph_url("http://h:3000", []) == "http://h:3000/asset-groups"


def test_check_url_selects_the_check_on_the_checks_tab():
    assert check_url("http://h:3000") == \
        "http://h:3000/assets/router_softflowd?view=checks&checkDetail=netflow_arriving"
    assert check_url("http://h:3000/", "a b/c", "x") == "http://h:3000/assets/a%20b/c?view=checks&checkDetail=x"
