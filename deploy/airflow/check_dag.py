"""Prints the engati-etl command lines of an Airflow DAG file as JSON, without Airflow.

Usage: python3 check_dag.py DAG.py [--import]

It parses the file with `ast` (the DAG is not run) and finds every call `engati_etl([...])`:
each list item that is a string constant is kept; anything computed (an f-string, a parameter)
becomes "{...}". With --import it also loads the file with Airflow's DagBag and fails on import
errors (needs the apache-airflow package). tests/deploy.rs compares the flags with --help.
"""

import ast
import json
import sys


def command_lines(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    constants[t.id] = node.value.value
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "engati_etl"
            and node.args
            and isinstance(node.args[0], ast.List)
        ):
            args = []
            for item in node.args[0].elts:
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    args.append(item.value)
                elif isinstance(item, ast.Name) and isinstance(constants.get(item.id), str):
                    args.append(constants[item.id])
                else:
                    args.append("{...}")
            lines.append(args)
    return lines


def import_with_airflow(path):
    import os

    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=os.path.dirname(os.path.abspath(path)), include_examples=False)
    if bag.import_errors:
        raise SystemExit(f"import errors: {bag.import_errors}")
    return {dag_id: sorted(t.task_id for t in dag.tasks) for dag_id, dag in bag.dags.items()}


def main():
    path = sys.argv[1]
    out = {"commands": command_lines(path)}
    if "--import" in sys.argv[2:]:
        out["dags"] = import_with_airflow(path)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
