// Lets pg-boss write its jobs inside one of our postgres.js transactions, so a job and the rows
// that motivate it commit (or roll back) together. pg-boss only needs `executeSql`.
import type { Queryable } from '../db/connection.ts';

export function bossDb(db: Queryable): { executeSql(text: string, values?: unknown[]): Promise<{ rows: any[] }> } {
  return {
    async executeSql(text: string, values: unknown[] = []) {
      const rows = await db.unsafe(text, values as never[]);
      return { rows: [...rows] };
    },
  };
}
