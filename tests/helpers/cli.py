"""Running the CLI in-process and checking its one-line errors."""

from flowroutes.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, pattern):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("flowroutes: error: "), err
    assert "Traceback" not in err
    assert pattern in err, err
