"""The SDK's pure parts: URLs, backoff, percent clamping, handler results, refusals."""
import unittest

from processes_worker import JobResult, review, socket_url
from processes_worker._connection import backoff_s, refusal_of
from processes_worker._worker import MAX_STACK_CHARS, clamp_percent, error_text, failure_of, outcome_of


class SocketUrl(unittest.TestCase):
    def test_base_urls_become_the_gateway_url_with_the_token(self):
        self.assertEqual(socket_url("http://localhost:3000", "wt_1"), "ws://localhost:3000/workers/ws?token=wt_1")
        self.assertEqual(socket_url("https://x.example/api/", "a b"), "wss://x.example/api/workers/ws?token=a+b")
        self.assertEqual(socket_url("ws://h/workers/ws?token=old&v=1", "new"), "ws://h/workers/ws?v=1&token=new")

    def test_other_schemes_are_refused(self):
        with self.assertRaises(ValueError):
            socket_url("ftp://h", "t")


class Backoff(unittest.TestCase):
    def test_doubles_from_min_to_max_with_jitter(self):
        for failures, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (20, 30.0)]:
            for _ in range(50):
                delay = backoff_s(failures, 0.5, 30.0)
                self.assertGreaterEqual(delay, ceiling / 2)
                self.assertLessEqual(delay, ceiling)


class Percent(unittest.TestCase):
    def test_rounds_half_up_and_clamps(self):
        self.assertEqual([clamp_percent(v) for v in [-5, 0, 12.5, 49.4, 99.6, 180]], [0, 0, 13, 49, 100, 100])

    def test_not_a_number_is_zero(self):
        self.assertEqual([clamp_percent(v) for v in [float("nan"), float("inf"), "x", None]], [0, 0, 0, 0])  # type: ignore[list-item]


class Outcomes(unittest.TestCase):
    def test_none_dict_and_job_result(self):
        self.assertEqual(outcome_of(None), {"op": "complete"})
        self.assertEqual(outcome_of({"rows": 3}), {"op": "complete", "result_summary": {"rows": 3}})
        self.assertEqual(outcome_of(JobResult({"a": 1})), {"op": "complete", "result_summary": {"a": 1}})
        self.assertEqual(outcome_of(review({"a": 1})), {"op": "complete", "result_summary": {"a": 1}, "review": True})

    def test_anything_else_fails_the_process_saying_what_came_back(self):
        outcome = outcome_of(42)
        self.assertEqual(outcome["op"], "fail")
        self.assertIn("int", outcome["error"])

    def test_error_text_names_the_exception_when_it_has_no_message(self):
        self.assertEqual(error_text(KeyError()), "KeyError")
        self.assertEqual(error_text(ValueError("row 3")), "row 3")
        self.assertEqual(len(error_text(ValueError("x" * 5000))), 4000)

    def test_a_failure_carries_its_traceback_cut_to_what_the_server_keeps(self):
        def broken():
            raise ValueError("row 3 is unreadable")

        try:
            broken()
        except ValueError as error:
            frame = failure_of(error)
        self.assertEqual((frame["op"], frame["error"]), ("fail", "row 3 is unreadable"))
        self.assertIn("Traceback (most recent call last)", frame["stack"])
        self.assertIn("in broken", frame["stack"])
        self.assertTrue(frame["stack"].rstrip().endswith("ValueError: row 3 is unreadable"))

        # Its end is kept: the innermost frame and the exception's line.
        try:
            raise RuntimeError("bottom " + "x" * 20000)
        except RuntimeError as error:
            frame = failure_of(error)
        self.assertEqual(len(frame["stack"]), MAX_STACK_CHARS)
        self.assertTrue(frame["stack"].rstrip().endswith("x" * 100))


class Refusals(unittest.TestCase):
    def test_401_and_403_from_old_and_new_websockets_exceptions(self):
        class Old(Exception):
            status_code = 401

        class Response:
            status_code = 403
            body = b'{"error":{"code":"forbidden","message":"token revoked"}}'

        class New(Exception):
            response = Response()

        old = refusal_of(Old())
        self.assertIsNotNone(old)
        assert old is not None
        self.assertEqual((old.status, old.code), (401, "unauthenticated"))
        new = refusal_of(New())
        assert new is not None
        self.assertEqual((new.status, new.code, str(new)), (403, "forbidden", "worker token refused: token revoked"))

    def test_other_statuses_are_not_refusals(self):
        class ServerError(Exception):
            status_code = 500

        self.assertIsNone(refusal_of(ServerError()))
        self.assertIsNone(refusal_of(OSError("connection refused")))


if __name__ == "__main__":
    unittest.main()
