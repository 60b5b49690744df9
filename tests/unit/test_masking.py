"""Secrets are masked before they reach a repr, a log line, a widget or a URL."""

from notebook_agent.masking import is_secret_name, mask, mask_tree, mask_url


def test_mask_keeps_a_short_prefix_of_long_values_only():
    assert mask("ABCDEFGHIJKL") == "ABCD****"
    assert mask("short") == "****"
    assert mask("") == "" and mask(None) == ""


def test_mask_url_hides_passwords_and_token_users():
    assert mask_url("https://user:hunter2@git.example/repo.git") == "https://user:****@git.example/repo.git"
    assert "ghp_abcdefghijklmnop" not in mask_url("https://ghp_abcdefghijklmnop@github.com/x/y.git")
    assert mask_url("http://127.0.0.1:8008") == "http://127.0.0.1:8008"


def test_mask_tree_masks_values_under_secret_names_at_any_depth():
    tree = {
        "api": {"credentials": {"access_key": "ACCESSKEY123456", "secret_key": "s3cr3t-value-long"}},
        "agent": {"git_pass": 123456789, "git_user": "me", "extra_index_url": ["https://u:pw@pypi.local/simple"]},
    }
    masked = mask_tree(tree)
    text = repr(masked)
    for secret in ("s3cr3t-value-long", "123456789", "pw@"):
        assert secret not in text
    assert masked["agent"]["git_user"] == "me"
    assert is_secret_name("secret_key") and is_secret_name("CLEARML_AGENT_GIT_PASS")
    assert not is_secret_name("worker_name")
