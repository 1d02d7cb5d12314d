"""KServe's stock ModelServer serving an XGBoost booster the way KServe's xgbserver does.

Runs inside the harness's own KServe virtualenv (not ours):
    python kserve_xgb.py --model_name bench-xgb --model_file model.json --http_port 8080 --grpc_port 8081
The Model subclass mirrors xgbserver's ``XGBoostModel``: DMatrix per request, ``nthread`` 1.
"""

from __future__ import annotations

import argparse
from typing import Any

import xgboost as xgb
from kserve import InferRequest, Model, ModelServer, model_server
from kserve.errors import InferenceError
from kserve.utils.utils import get_predict_input, get_predict_response


class XGBoostModel(Model):  # type: ignore[misc]
    def __init__(self, name: str, model_file: str, nthread: int) -> None:
        super().__init__(name)
        self.model_file = model_file
        self.nthread = nthread
        self._booster: xgb.Booster | None = None

    def load(self) -> bool:
        self._booster = xgb.Booster(params={"nthread": self.nthread}, model_file=self.model_file)
        self.ready = True
        return self.ready

    def predict(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None) -> Any:
        assert self._booster is not None
        try:
            instances = get_predict_input(payload)
            dmatrix = xgb.DMatrix(instances, nthread=self.nthread)
            result = self._booster.predict(dmatrix)
            return get_predict_response(payload, result, self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--nthread", type=int, default=1)
    args, _ = parser.parse_known_args()
    model = XGBoostModel(args.model_name, args.model_file, args.nthread)
    model.load()
    ModelServer().start([model])
